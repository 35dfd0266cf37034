"""`serve`: run the world's interfaces (MES/QMS HTTP now; file drops and live DB rows later)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plant_sim.server import Clock, FeedApi, max_updated_at, start_api
from plant_sim.systems.mes import ENTITIES as MES_ENTITIES
from plant_sim.timeutil import iso, parse_iso_utc


class Runtime:
    """Everything `serve` runs for one world, sharing one clock."""

    def __init__(self, world: Path, mes_port: int = 18081, qms_port: int | None = 18082,
                 api_key: str | None = None, clock_mode: str = "batch", speed: float = 60.0,
                 start: str | None = None, inbox: Path | None = None,
                 host: str = "127.0.0.1") -> None:
        self.world = world
        self.manifest = json.loads((world / "world.json").read_text(encoding="utf-8"))
        self.host = host
        self.mes_port = mes_port
        self.qms_port = qms_port
        self.api_key = api_key
        self.inbox = inbox or (world / "inbox")
        mes_db = world / "mes" / "mes.sqlite"
        horizon = max_updated_at(mes_db, MES_ENTITIES)
        t0 = parse_iso_utc(start) if start else parse_iso_utc(self.manifest["first_shift_start"])
        self.clock = Clock(clock_mode, t0, speed, horizon)
        self.apis: list[FeedApi] = [FeedApi("mes", mes_db, MES_ENTITIES, self.clock, api_key)]
        self.servers: list[Any] = []

    def start(self) -> None:
        """Start the HTTP servers (and background emitters)."""
        self.servers.append(start_api(self.apis[0], self.host, self.mes_port))

    def stop(self) -> None:
        """Stop everything started."""
        for s in self.servers:
            s.shutdown()
            s.server_close()

    @property
    def mes_url(self) -> str:
        """Base URL of the MES API, e.g. `http://127.0.0.1:18081/api/v1`."""
        return f"http://{self.host}:{self.servers[0].server_address[1]}/api/v1"

    def describe(self) -> dict[str, Any]:
        """What is served where (printed by the CLI)."""
        return {
            "mes": self.mes_url,
            "clock": self.clock.mode,
            "clock_now": iso(self.clock.now()),
            "world": str(self.world),
        }
