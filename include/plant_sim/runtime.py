"""`serve`: run a world's interfaces — MES/QMS HTTP, file drops into the inbox and (live clock)
ERP/EAM rows appearing in their databases — all following one clock."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from plant_sim.drops import Dropper, read_index
from plant_sim.server import Clock, FeedApi, max_updated_at, start_api
from plant_sim.systems.mes import ENTITIES as MES_ENTITIES
from plant_sim.systems.qms import ENTITIES as QMS_ENTITIES
from plant_sim.timeutil import iso, parse_iso_utc


class Runtime:
    """Everything `serve` runs for one world, sharing one clock."""

    def __init__(
        self,
        world: Path,
        mes_port: int = 18081,
        qms_port: int | None = 18082,
        api_key: str | None = None,
        clock_mode: str = "batch",
        speed: float = 60.0,
        start: str | None = None,
        inbox: Path | None = None,
        host: str = "127.0.0.1",
        erp_dsn: str | None = None,
        eam_dsn: str | None = None,
    ) -> None:
        self.world = world
        self.manifest = json.loads((world / "world.json").read_text(encoding="utf-8"))
        self.host = host
        self.mes_port = mes_port
        self.qms_port = qms_port
        self.inbox = inbox or (world / "inbox")
        self.db_dsns = {k: v for k, v in (("erp", erp_dsn), ("eam", eam_dsn)) if v}
        mes_db = world / "mes" / "mes.sqlite"
        qms_db = world / "qms" / "qms.sqlite"
        horizon = max_updated_at(mes_db, MES_ENTITIES)
        if qms_db.exists():
            horizon = max(horizon, max_updated_at(qms_db, QMS_ENTITIES))
        if (world / "drops" / "index.csv").exists():
            horizon = max([horizon] + [at for at, _s, _n in read_index(world)])
        t0 = (
            parse_iso_utc(start)
            if start
            else parse_iso_utc(self.manifest["first_shift_start"])
        )
        self.clock = Clock(clock_mode, t0, speed, horizon)
        self.mes = FeedApi("mes", mes_db, MES_ENTITIES, self.clock, api_key)
        self.qms = (
            FeedApi("qms", qms_db, QMS_ENTITIES, self.clock, api_key)
            if qms_db.exists() and qms_port is not None
            else None
        )
        self.dropper = Dropper(world, self.inbox, self.clock)
        self.servers: dict[str, Any] = {}
        self._stop = threading.Event()

    def start(self) -> None:
        """Start the HTTP servers, the file dropper and (live) the database row mover."""
        self.servers["mes"] = start_api(self.mes, self.host, self.mes_port)
        if self.qms is not None:
            self.servers["qms"] = start_api(self.qms, self.host, self.qms_port or 0)
        self.dropper.start()
        if self.clock.mode == "live" and self.db_dsns:
            threading.Thread(
                target=self._move_rows, name="db-rows", daemon=True
            ).start()

    def _move_rows(self) -> None:
        from plant_sim.loaders import move_visible

        while not self._stop.wait(5.0):
            for system, dsn in self.db_dsns.items():
                try:
                    move_visible(dsn, system, iso(self.clock.now()))
                except Exception as exc:  # noqa: BLE001 - keep serving; report and retry
                    print(f"plant_sim: moving {system} rows failed: {exc}", flush=True)

    def stop(self) -> None:
        """Stop everything started."""
        self._stop.set()
        self.dropper.stop()
        for s in self.servers.values():
            s.shutdown()
            s.server_close()

    def url(self, system: str) -> str:
        """Base URL of an HTTP system, e.g. `http://127.0.0.1:18081/api/v1`."""
        return f"http://{self.host}:{self.servers[system].server_address[1]}/api/v1"

    @property
    def mes_url(self) -> str:
        return self.url("mes")

    @property
    def qms_url(self) -> str:
        return self.url("qms")

    def describe(self) -> dict[str, Any]:
        """What is served where (printed by the CLI)."""
        return {
            **{name: self.url(name) for name in self.servers},
            "inbox": str(self.inbox),
            "clock": self.clock.mode,
            "clock_now": iso(self.clock.now()),
            "world": str(self.world),
        }
