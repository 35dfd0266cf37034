"""`serve`: run a world's interfaces — MES/QMS HTTP, file drops into the inbox and (live clock)
ERP/EAM rows appearing in their databases — all following one clock."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from plant_sim.drops import Dropper, read_index
from plant_sim.faults import ApiFaults, FaultJournal, parse_spec, plan_deliveries
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
        faults: dict[str, dict[str, Any]] | None = None,
        truth_dsn: str | None = None,
        opcua_port: int | None = None,
        modbus_port: int | None = None,
        mqtt: Any = None,
        broker_restart: Any = None,
    ) -> None:
        """`faults`: `[faults.<system>]` tables (None: the world config's, `{}`: none);
        `truth_dsn`: copy injected faults into `truth.injected_defects` there; `opcua_port`,
        `modbus_port`, `mqtt` (a `protocols.runner.MqttTarget`): the shop floor's protocols,
        each only when given; `broker_restart`: called at a planned broker restart."""
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
        self.faults = parse_spec(
            self.manifest.get("faults", {}) if faults is None else faults
        )
        seed = int(self.manifest.get("seed", 0))
        self.journal = FaultJournal(
            self.inbox / ".plant_sim_faults.csv",
            _generated_defects(world) + 1,
            None,
            truth_dsn,
        )
        index = read_index(world) if (world / "drops" / "index.csv").exists() else []
        schedule = plan_deliveries(index, self.faults, seed)
        if schedule:
            horizon = max([horizon] + [d.at for d in schedule])
        t0 = (
            parse_iso_utc(start)
            if start
            else parse_iso_utc(self.manifest["first_shift_start"])
        )
        self.clock = Clock(clock_mode, t0, speed, horizon)
        self.journal.clock = self.clock
        self.dropper = Dropper(world, self.inbox, self.clock, schedule, self.journal)

        def api(name: str, db: Path, entities: dict[str, tuple[str, str]]) -> FeedApi:
            f = ApiFaults(name, self.faults.get(name, {}), seed, self.journal)
            return FeedApi(name, db, entities, self.clock, api_key, f, self.status)

        self.mes = api("mes", mes_db, MES_ENTITIES)
        self.qms = (
            api("qms", qms_db, QMS_ENTITIES)
            if qms_db.exists() and qms_port is not None
            else None
        )
        self.shopfloor: Any = None
        if opcua_port is not None or modbus_port is not None or mqtt is not None:
            from plant_sim.protocols.runner import Shopfloor

            self.shopfloor = Shopfloor(
                world, self.clock, host, opcua_port, modbus_port, mqtt, broker_restart
            )
        self.servers: dict[str, Any] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Deliver the files due now, then start the HTTP servers (so a healthy API means the
        first delivery pass is done), the dropper thread and (live) the database row mover."""
        self.dropper.start()
        if self.dropper.interrupted:  # a signal came: the caller stops us
            return
        self.servers["mes"] = start_api(self.mes, self.host, self.mes_port)
        if self.qms is not None:
            self.servers["qms"] = start_api(self.qms, self.host, self.qms_port or 0)
        if self.shopfloor is not None:
            self.shopfloor.start()
        if self.clock.mode == "live" and self.db_dsns:
            self._thread(self._move_rows, "db-rows")
        if self.journal.truth_dsn:
            self._thread(self._sync_journal, "fault-journal")

    def _thread(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def status(self) -> dict[str, Any]:
        """Extra health fields: file delivery progress and injected fault counts."""
        out = {"drops": self.dropper.status(), "faults": self.journal.counts()}
        if self.shopfloor is not None:
            out["shopfloor"] = self.shopfloor.status()
        return out

    def _sync_journal(self) -> None:
        while True:
            try:
                self.journal.sync()
            except Exception as exc:  # noqa: BLE001 - keep serving; report and retry
                print(
                    f"plant_sim: recording faults in the truth failed: {exc}",
                    flush=True,
                )
            if self._stop.wait(2.0):
                return

    def _move_rows(self) -> None:
        from plant_sim.loaders import move_visible

        while not self._stop.wait(5.0):
            for system, dsn in self.db_dsns.items():
                try:
                    move_visible(dsn, system, iso(self.clock.now()))
                except Exception as exc:  # noqa: BLE001 - keep serving; report and retry
                    print(f"plant_sim: moving {system} rows failed: {exc}", flush=True)

    def stop(self) -> None:
        """Stop everything started (also after a partial start); idempotent."""
        self._stop.set()
        if self.shopfloor is not None:
            self.shopfloor.stop()
        for a in (self.mes, self.qms):
            if a is not None:
                a.closing.set()
        self.dropper.stop()
        for s in self.servers.values():
            s.shutdown()
            s.server_close()
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()
        try:
            self.journal.sync()
        except Exception as exc:  # noqa: BLE001 - stopping anyway
            print(f"plant_sim: recording faults in the truth failed: {exc}", flush=True)

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
            **(self.shopfloor.describe() if self.shopfloor is not None else {}),
            "inbox": str(self.inbox),
            "clock": self.clock.mode,
            "clock_now": iso(self.clock.now()),
            "world": str(self.world),
        }


def _generated_defects(world: Path) -> int:
    """Rows of the world's `truth/injected_defects.csv` (faults are numbered after them)."""
    import csv

    path = world / "truth" / "injected_defects.csv"
    if not path.exists():
        return 0
    with open(path, encoding="utf-8", newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))
