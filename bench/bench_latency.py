"""Benchmark the platform's end-to-end latency: how long after a shop-floor event happened it
reached raw, its conformed fact and mart, the ERP's inbound table and the reporting views, with
Airflow's own scheduling delays inside the figure (issue #15, item 1).

The platform runs as `make run` starts it (`python -m launcher run`, LocalExecutor), on its own
instance: var/bench-latency, PostgreSQL 127.0.0.1:55491, API :18690, MES :18691, QMS :18692,
Redis :56691, MQTT :18693, OPC UA :48691, Modbus :15691. The only difference is the plant's
configuration: bench/latency_plant.toml (the default plant with 36 machines instead of 12, more
unplanned stops, no defects; its header says why) instead of configs/default.toml. The instance
is wiped first and stopped at the end, also on Ctrl-C or a failure. The bench starts nothing
else and tells the platform nothing: it reads the plant's own world folder (what the plant
emits, and when), the warehouse, the ERP's `erp.inbound_postings` and Airflow's metadata
database, as the cluster's superuser.

When: an MES confirms every machine's running operation at a shift change, and each operation
when it completes; the QMS decides a lot 45.5 min after it was produced. The bench's plant
releases 24-32 orders per line and day (latency_plant.toml), so operations last under an hour
and any 75 minutes hold 20-60 confirmations (median 47) and as many usage decisions: `--align
now` (the default, so that `make bench` never waits) starts at once and still follows the 20
events per kind a percentile needs (fewer: the figure is null in results.json, and the bench
says so). `--align shift` waits — nothing running, up to 8 hours — until it can start the
platform for a window that opens 5 min before the site's next S1 or S2 shift end (14:00 or
22:00 in Erfurt: 13:00, 21:00 UTC in winter): the window then holds a shift change's
confirmation burst on top, the plant's busiest moment for the ERP.

Warm-up: `make run` loads the plant's last two days once (a manual run of every extraction DAG,
then transform, gate, publishing). The window starts when that is done for ERP, MES, QMS and
WMS (none of their manual runs queued or running, and a `publish_erp` run that started after
them succeeded), at the latest after `--warmup-timeout-minutes` (20), so the history's backlog
is not in the figures. Every event whose plant instant falls in the window is followed until it
reached every stage, or `--drain-minutes` (default 30) after the window closed.

Events (their plant instant: the moment the plant makes them visible on its live clock, UTC,
speed 1 = wall clock; include/plant_sim: a record appears when the clock passes its updated_at,
a file when it passes its drop time):

- `mes`: an operation confirmation (MES `confirmations`), at its `updated_at` — when the MES
  recorded it, 5-180 s after the segment's `end_at`. Stages: raw (`raw_mes.confirmations`), fact
  (`conformed.fct_operation_confirmation`), mart (`marts.mart_production_line_day`: the line-day's
  confirmation_count counts it), erp (accepted `production_confirmation` in
  `erp.inbound_postings`), reporting (`reporting.rpt_production_line_day` counts it).
- `mes_state`: a machine state interval (MES `machine_states`), at its `updated_at` (recorded
  after the interval ended). Stages: raw, fact (`fct_machine_state_interval`), mart
  (`mart_oee_loss_shift`: the machine-shift's interval_count for its state and reason counts it),
  reporting (`rpt_downtime_pareto`'s stop_count of its line and reason counts it — idle, setup
  and unplanned stops only; the pareto has no running or planned time).
- `qms`: a quality result — the QMS usage decision of an inspection lot, at its `updated_at`: the
  ERP's `quality_result` message is per inspection lot and needs the decision. Stages: raw
  (`raw_qms.usage_decisions`), publish (`publish.pub_erp__quality_result`), erp (accepted).
- `wms`: a movement row of a WMS movements file, at the row's event_time (site-local, converted
  with the site's zone): the file's period (2 minutes in the bench's plant, hourly by default)
  and the exporter's delay are inside this figure. Stages: raw
  (`raw_wms.movements`), fact (`conformed.fct_material_movement`).
- `wms_file`: the movements file itself, at its drop time (`drops/index.csv` available_at);
  raw = when its last row was committed.

When a stage was reached: raw = the commit time of the batch that holds the row
(`ops.load_audit.finished_at` of its `_batch_id`); erp = the ERP's `received_at`; fact, mart,
publish and reporting = the first poll (every `--poll-s`, 5 s) that saw it. Latency = reached
- plant instant, in seconds.

Figures merged into bench/results.json: `latency_<kind>_to_<stage>_p50_s` and `_p95_s` for every
kind and stage above (e.g. `latency_mes_to_erp_p95_s`, `latency_qms_to_erp_p95_s`,
`latency_mes_to_reporting_p95_s`, `latency_wms_file_to_raw_p95_s`, `latency_wms_to_raw_p95_s`),
`latency_<kind>_events` (events followed) and `latency_<kind>_to_<stage>_reached` (how many
reached the stage in time; an event that did not counts as slower than all that did, and a
percentile that falls on one is null: an earlier run's figure never stays beside this run's),
`latency_complete` (every event through every stage), `latency_commit` (the git commit
measured) and `latency_window_minutes`. Ctrl-C (or SIGTERM) while following
stops following and reports what was seen, then stops the platform. A smoke run
(`--smoke`) merges nothing.

Where the time goes (printed, medians per kind): from Airflow's metadata and the platform's
bookkeeping, for each event that reached the ERP (or raw, for the others): `extract wait` (plant
instant → the extraction run that loaded it was queued: the schedule or the change trigger),
`extract run` (queued → its batch committed), `transform wait` (→ the first `transform_dbt` run
that processed the batch was queued; ops.transform_run), `transform pre-dbt` (queued → the
first dbt task started: data_interval and the hand-over), `dbt` (first dbt task start → last
dbt task end: dbt's start-up and the models with their tests), `gate` (→ quality_gate ended),
`publish wait` (→ the `publish_erp` run that posted it was queued; ops.erp_outbox
answered_in_run), `publish` (→ the ERP received it).

Usage: .venv/bin/python bench/bench_latency.py [--align shift|now] [--minutes 75]
       [--drain-minutes 30] [--warmup-timeout-minutes 20] [--smoke]
`--smoke`: at once, a 5-minute window, 10 minutes of drain, nothing merged.
Expect the wait for the shift change (up to 8 h), then warm-up (10-20 min) + window + drain:
about 2 h on 2 cores.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import csv
import importlib
import io
import json
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

from _results import merge_results

PORTS = {
    "SFDP_RUN_INSTANCE": "bench-latency",
    "SFDP_PG_PORT": "55491", "SFDP_API_PORT": "18690", "SFDP_MES_PORT": "18691",
    "SFDP_QMS_PORT": "18692", "SFDP_REDIS_PORT": "56691", "SFDP_MQTT_PORT": "18693",
    "SFDP_OPCUA_PORT": "48691", "SFDP_MODBUS_PORT": "15691",
}
PLANT_CONFIG = ROOT / "bench" / "latency_plant.toml"
STAGES = {
    "mes": ("raw", "fact", "mart", "erp", "reporting"),
    "mes_state": ("raw", "fact", "mart", "reporting"),
    "qms": ("raw", "publish", "erp"),
    "wms": ("raw", "fact"),
    "wms_file": ("raw",),
}
LOSS_STATES = ("idle", "setup", "unplanned_downtime")  # what rpt_downtime_pareto counts
MIN_EVENTS = 20


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


LEAD_MINUTES = 5  # the window opens this long before the shift end


def next_shift_end(after: datetime, zone: ZoneInfo) -> datetime:
    """The first S1 or S2 end (the plant's shift calendar: local 14:00, 22:00; most
    confirmations come then) at or after `after`, UTC."""
    from plant_sim.calendar import shifts_for_day

    local = after.astimezone(zone).date()
    ends = [datetime.fromtimestamp(shift.end, UTC) for i in range(3)
            for shift in shifts_for_day("", local + timedelta(days=i), zone)[:2]]
    return min(at for at in ends if at >= after)


def site_zone() -> ZoneInfo:
    """The time zone of the bench's one site (latency_plant.toml says why one): its shift ends,
    its WMS files' local event times."""
    sites = tomllib.loads(PLANT_CONFIG.read_text(encoding="utf-8"))["sites"]
    if len(sites) != 1:
        raise SystemExit(f"{PLANT_CONFIG.name}: the bench follows one site, not {len(sites)}")
    return ZoneInfo(sites[0]["timezone"])


# ---- the platform, as make run starts it --------------------------------------------------------

class _WithoutLogin(io.TextIOBase):
    """A stdout that drops the line with the UI password (the launcher's banner)."""

    def __init__(self, out) -> None:
        self.out = out

    def write(self, text: str) -> int:
        kept = "".join(line for line in text.splitlines(keepends=True)
                       if not line.lstrip().startswith("login "))
        self.out.write(kept)
        self.out.flush()
        return len(text)


class Platform:
    """`python -m launcher run` on the bench's instance with the bench's plant config; `stop`
    stops everything it started (launcher stop), whatever happened."""

    def __init__(self) -> None:
        os.environ.update(PORTS)
        self.launcher = importlib.import_module("launcher.__main__")
        from launcher.settings import load_or_create_secrets, run_instance

        self.instance = run_instance()
        self._secrets = load_or_create_secrets
        self.secret: dict[str, str] = {}

    def wipe(self) -> None:
        """Stop what a previous bench left running and delete its instance: a fresh start."""
        if self.instance.var_dir.exists():
            self.stop()
            shutil.rmtree(self.instance.var_dir)

    def start(self) -> None:
        # live_plant_config re-dates the bench's plant as make run does the default one
        self.launcher.PLANT_BASE_CONFIG = PLANT_CONFIG
        # make run's banner prints the UI login: not into the bench's output
        with contextlib.redirect_stdout(_WithoutLogin(sys.stdout)):
            self.launcher.cmd_run(argparse.Namespace(executor="local", workers=2, concurrency=4))
        self.secret = self._secrets(self.instance)

    def stop(self) -> None:
        try:
            self.launcher.cmd_stop(argparse.Namespace())
        except SystemExit as exc:  # leftovers: say so, the bench still reports
            log(f"launcher stop: {exc}")

    def dsn(self, dbname: str) -> str:
        return self.launcher.cluster_for(self.instance, self.secret).dsn(dbname)

    @property
    def world(self) -> Path:
        return self.instance.plant_dir


# ---- events ------------------------------------------------------------------------------------

@dataclass
class Event:
    kind: str
    key: str
    at: datetime  # the plant instant, UTC
    scope: dict = field(default_factory=dict)
    reached: dict[str, datetime] = field(default_factory=dict)

    def stages(self) -> tuple[str, ...]:
        """The stages it goes through: a running or planned-downtime interval is in no pareto."""
        if self.kind == "mes_state" and self.scope["state"] not in LOSS_STATES:
            return ("raw", "fact", "mart")
        return STAGES[self.kind]

    def pending(self) -> list[str]:
        return [s for s in self.stages() if s not in self.reached]

    def emitted(self, now: datetime) -> bool:
        """The plant has made it visible by `now` (a WMS row: when its file was dropped)."""
        return self.scope.get("dropped", self.at) <= now


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


# the change feeds followed: kind → (world file, table, record key)
FEEDS = {
    "mes": ("mes/mes.sqlite", "confirmations", "confirmation_id"),
    "mes_state": ("mes/mes.sqlite", "machine_states", "state_id"),
    "qms": ("qms/qms.sqlite", "usage_decisions", "usage_decision_id"),
}


def _instants(rows, key_of) -> dict[tuple, list[datetime]]:
    """key → the sorted plant instants of its records."""
    out: dict[tuple, list[datetime]] = {}
    for row in rows:
        out.setdefault(key_of(row), []).append(_iso(row["updated_at"]))
    return {key: sorted(ats) for key, ats in out.items()}


class Observer:
    """The events the plant emits in the window and when each reached each stage.

    `plant_sim up` generates its world ahead (the live clock only reveals it), so the world
    folder is read once: every record up to the window's end, the window's events, and for each
    the figure its mart or report must reach to count it (how many records of its line-day,
    machine-shift-state-reason or line-reason the plant had recorded by then). Polling then
    follows the events whose plant instant has passed."""

    def __init__(self, platform: Platform, start: datetime, end: datetime,
                 zone: ZoneInfo) -> None:
        import psycopg

        self.start, self.end, self.zone = start, end, zone
        self.events: dict[tuple[str, str], Event] = {}
        self._read_world(platform.world)
        self.wh = psycopg.connect(platform.dsn("warehouse"), autocommit=True)
        self.erp = psycopg.connect(platform.dsn("erp"), autocommit=True)

    def close(self) -> None:
        self.wh.close()
        self.erp.close()

    # what the plant emits ---------------------------------------------------------------------
    def _read_world(self, world: Path) -> None:
        firsts: dict[str, dict[str, dict]] = {}
        for kind, (db, table, key) in FEEDS.items():
            with contextlib.closing(sqlite3.connect(f"file:{world / db}?mode=ro", uri=True)) as c:
                rows = c.execute(f"select body from {table} where updated_at <= ? "
                                 "order by updated_at, id", (int(self.end.timestamp()),))
                firsts[kind] = {}
                for (body,) in rows:  # a record's first version: when the plant recorded it
                    record = json.loads(body)
                    firsts[kind].setdefault(record[key], record)
        states = firsts["mes_state"].values()
        per_line_day = _instants(firsts["mes"].values(),
                                 lambda r: (r["line_code"], r["production_date"]))
        per_shift = _instants(states, lambda r: (r["machine_code"], r["production_date"],
                                                 r["shift_code"], r["state"],
                                                 r["reason_code"] or "-"))
        per_reason = _instants((r for r in states if r["state"] in LOSS_STATES),
                               lambda r: (r["line_code"], r["reason_code"] or "-"))
        for kind, records in firsts.items():
            for key, r in records.items():
                at = _iso(r["updated_at"])
                if not self.start <= at <= self.end:
                    continue
                if kind == "mes":
                    line_day = (r["line_code"], r["production_date"])
                    scope = {"line_day": line_day,
                             "count": bisect.bisect_right(per_line_day[line_day], at)}
                elif kind == "mes_state":
                    shift = (r["machine_code"], r["production_date"], r["shift_code"],
                             r["state"], r["reason_code"] or "-")
                    reason = (r["line_code"], r["reason_code"] or "-")
                    scope = {"state": r["state"], "machine": r["machine_code"], "shift": shift,
                             "shift_count": bisect.bisect_right(per_shift[shift], at),
                             "reason": reason,
                             "reason_count": bisect.bisect_right(per_reason.get(reason, []), at)}
                else:
                    scope = {"lot": r["inspection_lot_id"]}
                self.events[(kind, key)] = Event(kind, key, at, scope)
        self._read_wms_drops(world)

    def _read_wms_drops(self, world: Path) -> None:
        from plant_sim.drops import read_index

        for dropped_at, system, name in read_index(world):
            dropped = datetime.fromtimestamp(dropped_at, UTC)
            if (system != "wms" or not name.startswith("WMS_MOVEMENTS_")
                    or not self.start <= dropped <= self.end):
                continue
            with open(world / "drops" / "wms" / name, encoding="gb18030", newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter=";"))
            self.events[("wms_file", name)] = Event(
                "wms_file", name, dropped, {"rows": [r["movement_id"] for r in rows]})
            for r in rows:  # event_time is site-local
                at = datetime.fromisoformat(r["event_time"]).replace(tzinfo=self.zone)
                self.events.setdefault(("wms", r["movement_id"]), Event(
                    "wms", r["movement_id"], at.astimezone(UTC), {"dropped": dropped}))

    def emitted(self, now: datetime) -> list[Event]:
        """The window's events the plant has emitted by `now`."""
        return [e for e in self.events.values() if e.emitted(now)]

    # when it reached each stage --------------------------------------------------------------
    def _due(self, kind: str, stage: str, now: datetime) -> list[Event]:
        return [e for (k, _), e in self.events.items()
                if k == kind and e.emitted(now) and stage in e.pending()]

    def poll(self, now: datetime) -> None:
        self._raw("mes", "raw_mes.confirmations", "confirmation_id", now)
        self._raw("mes_state", "raw_mes.machine_states", "state_id", now)
        self._raw("qms", "raw_qms.usage_decisions", "usage_decision_id", now)
        self._raw("wms", "raw_wms.movements", "movement_id", now)
        self._seen("mes", "fact", "conformed.fct_operation_confirmation", "confirmation_id", now)
        self._seen("mes_state", "fact", "conformed.fct_machine_state_interval", "state_id", now)
        self._seen("wms", "fact", "conformed.fct_material_movement", "movement_id", now)
        self._seen("qms", "publish", "publish.pub_erp__quality_result", "inspection_lot_id", now,
                   scope_key="lot")
        self._erp("mes", "production_confirmation", "confirmation_id", now,
                  key_of=lambda e: e.key)
        self._erp("qms", "quality_result", "inspection_lot_id", now,
                  key_of=lambda e: e.scope["lot"])
        for stage, table in (("mart", "marts.mart_production_line_day"),
                             ("reporting", "reporting.rpt_production_line_day")):
            self._counted("mes", stage, now, "line_day", "count",
                          f"select line_code, production_date::text, confirmation_count "
                          f"from {table}")
        self._counted("mes_state", "mart", now, "shift", "shift_count",
                      "select machine_code, production_date::text, shift_code, machine_state, "
                      "reason_code, interval_count from marts.mart_oee_loss_shift "
                      "where machine_code = any(%s)", machines=True)
        self._counted("mes_state", "reporting", now, "reason", "reason_count",
                      "select line_code, coalesce(reason_code, '-'), stop_count "
                      "from reporting.rpt_downtime_pareto")
        for event in self._due("wms_file", "raw", now):
            rows = [self.events[("wms", i)] for i in event.scope["rows"]]
            if rows and all("raw" in r.reached for r in rows):
                event.reached["raw"] = max(r.reached["raw"] for r in rows)

    def _query(self, conn, sql: str, params=()) -> list[tuple]:
        import psycopg

        try:
            return conn.execute(sql, params).fetchall()
        except psycopg.errors.UndefinedTable:  # dbt has not built it yet
            return []
        except psycopg.errors.ObjectNotInPrerequisiteState:
            return []

    def _raw(self, kind: str, table: str, key: str, now: datetime) -> None:
        """Raw is reached when the first batch that holds the row committed (a later window
        may load it again, under another batch); its extraction run is kept for the breakdown."""
        pending = {e.key: e for e in self._due(kind, "raw", now)}
        if not pending:
            return
        for k, finished, run_id in self._query(
                self.wh, f"select distinct on (r.{key}) r.{key}, a.finished_at, a.run_id "
                f"from {table} r join ops.load_audit a on a.batch_id = r._batch_id "
                f"where r.{key} = any(%s) order by r.{key}, a.finished_at", (list(pending),)):
            pending[k].reached["raw"] = finished
            pending[k].scope["extract_run"] = run_id

    def _seen(self, kind: str, stage: str, table: str, key: str, now: datetime,
              scope_key: str | None = None) -> None:
        pending: dict[str, list[Event]] = {}
        for e in self._due(kind, stage, now):
            pending.setdefault(e.scope[scope_key] if scope_key else e.key, []).append(e)
        if not pending:
            return
        for (k,) in self._query(self.wh, f"select distinct {key} from {table} "
                                f"where {key} = any(%s)", (list(pending),)):
            for e in pending[k]:
                e.reached[stage] = now

    def _erp(self, kind: str, message_type: str, field_name: str, now: datetime,
             key_of) -> None:
        pending: dict[str, list[Event]] = {}
        for e in self._due(kind, "erp", now):
            pending.setdefault(key_of(e), []).append(e)
        if not pending:
            return
        for k, received in self._query(
                self.erp, "select payload->>%s, min(received_at) from erp.inbound_postings "
                "where message_type = %s and status = 'accepted' and reversal_of is null "
                "and payload->>%s = any(%s) group by 1",
                (field_name, message_type, field_name, list(pending))):
            for e in pending[k]:
                e.reached["erp"] = received

    def _counted(self, kind: str, stage: str, now: datetime, key: str, count: str, sql: str,
                 machines: bool = False) -> None:
        """The figure `sql` gives for the event's key (its last column, summed over rows of the
        same key) counts the event: it is at least the number of records of that key the plant
        had recorded up to the event."""
        pending = self._due(kind, stage, now)
        if not pending:
            return
        params = (sorted({e.scope["machine"] for e in pending}),) if machines else ()
        figures: dict[tuple, int] = {}
        for *k, value in self._query(self.wh, sql, params):
            figures[tuple(k)] = figures.get(tuple(k), 0) + value
        for e in pending:
            if figures.get(e.scope[key], 0) >= e.scope[count]:
                e.reached[stage] = now


# ---- warm-up and Airflow's metadata -------------------------------------------------------------

HISTORY_DAGS = ["extract_erp", "extract_mes", "extract_qms", "extract_wms"]


def history_loaded(airflow) -> bool:
    """The history load of the systems the events come from (and the ERP's orders, which the
    postings need) is through: none of their manual runs queued or running, and a publish_erp
    run that started after the last of them ended has succeeded. (The shop-floor history —
    OPC UA's 48 h HistoryRead — may still be loading; it feeds none of the followed stages.)"""
    row = airflow.execute(
        "select count(*) filter (where state in ('queued', 'running')), max(end_date) "
        "from dag_run where dag_id = any(%s) and run_type = 'manual'", (HISTORY_DAGS,)).fetchone()
    if row[0] or row[1] is None:
        return False
    done = airflow.execute(
        "select 1 from dag_run where dag_id = 'publish_erp' and state = 'success' "
        "and start_date > %s limit 1", (row[1],)).fetchone()
    return done is not None


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


BREAKDOWN = ("extract wait", "extract run", "transform wait", "transform pre-dbt", "dbt", "gate",
             "publish wait", "publish")
SYSTEM_OF = {"mes": "mes", "mes_state": "mes", "qms": "qms", "wms": "wms"}
ERP_MESSAGE = {"mes": "production_confirmation", "qms": "quality_result"}


def breakdown(kind: str, events: list[Event], wh, airflow) -> dict[str, list[float]]:
    """Per event of `kind`, the seconds of each step of BREAKDOWN it went through (missing
    steps left out)."""
    parts: dict[str, list[float]] = {name: [] for name in BREAKDOWN}
    erp_type = ERP_MESSAGE.get(kind)
    transforms = wh.execute("select run_id, audit_upto from ops.transform_run "
                            "where succeeded_at is not null order by audit_upto").fetchall()

    def dag_run(dag_id: str, run_id: str):
        return airflow.execute("select queued_at, start_date, end_date from dag_run "
                               "where dag_id = %s and run_id = %s", (dag_id, run_id)).fetchone()

    def task_span(dag_id: str, run_id: str, prefix: str):
        return airflow.execute(
            "select min(start_date), max(end_date) from task_instance where dag_id = %s "
            "and run_id = %s and task_id like %s and start_date is not null",
            (dag_id, run_id, prefix + "%")).fetchone()

    for e in events:
        if e.kind != kind or "raw" not in e.reached:
            continue
        finished = e.reached["raw"]  # the batch that first loaded it, and its run (_raw)
        run = dag_run(f"extract_{SYSTEM_OF[kind]}", e.scope["extract_run"])
        if run is None or run[0] is None:
            continue
        parts["extract wait"].append((run[0] - e.at).total_seconds())
        parts["extract run"].append((finished - run[0]).total_seconds())
        transform_id = next((r for r, upto in transforms if upto >= finished), None)
        if transform_id is None:
            continue
        t_run = dag_run("transform_dbt", transform_id)
        dbt_start, dbt_end = task_span("transform_dbt", transform_id, "dbt.")
        _, gate_end = task_span("transform_dbt", transform_id, "quality_gate")
        if t_run is None or dbt_start is None or gate_end is None:
            continue
        parts["transform wait"].append((t_run[0] - finished).total_seconds())
        parts["transform pre-dbt"].append((dbt_start - t_run[0]).total_seconds())
        parts["dbt"].append((dbt_end - dbt_start).total_seconds())
        parts["gate"].append((gate_end - dbt_end).total_seconds())
        if erp_type is None or "erp" not in e.reached:
            continue
        business_key = e.key if kind == "mes" else e.scope["lot"]
        answered = wh.execute(
            "select answered_in_run from ops.erp_outbox where message_type = %s and "
            "business_key = %s and kind = 'posting' and state = 'accepted' "
            "order by outbox_id limit 1", (erp_type, business_key)).fetchone()
        p_run = dag_run("publish_erp", answered[0]) if answered and answered[0] else None
        if p_run is None:
            continue
        parts["publish wait"].append((p_run[0] - gate_end).total_seconds())
        parts["publish"].append((e.reached["erp"] - p_run[0]).total_seconds())
    return parts


# ---- the run -----------------------------------------------------------------------------------

def git_commit() -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return f"{head}{'+dirty' if dirty else ''}" if head else "unknown"


def follow(observer: Observer, window_end: datetime, drain_end: datetime,
           poll_s: float) -> None:
    """Poll until the window closed and every event went through every stage (or the drain
    ran out)."""
    last_report = 0.0
    while True:
        now = datetime.now(UTC)
        observer.poll(now)
        emitted = observer.emitted(now)
        pending = sum(1 for e in emitted if e.pending())
        if time.monotonic() - last_report > 60:
            counts = {k: sum(1 for e in emitted if e.kind == k) for k in STAGES}
            log(f"events {counts}; {pending} not through every stage")
            last_report = time.monotonic()
        if now >= window_end and (pending == 0 or now >= drain_end):
            return
        time.sleep(poll_s)


def wait_for_shift_change(zone: ZoneInfo, warmup_minutes: float) -> None:
    """Sleep (nothing running) until the platform, started now, is warm a few minutes before
    the site's next S1/S2 shift end."""
    lead = timedelta(minutes=warmup_minutes + LEAD_MINUTES)
    shift_end = next_shift_end(datetime.now(UTC) + lead, zone)
    start_at = shift_end - lead
    log(f"the window is aligned on the shift end at {shift_end:%Y-%m-%d %H:%M} UTC: starting the "
        f"platform at {start_at:%H:%M} UTC (--align now to start at once)")
    time.sleep(max(0.0, (start_at - datetime.now(UTC)).total_seconds()))


def measure(args: argparse.Namespace) -> dict:
    import psycopg

    zone = site_zone()
    if args.align == "shift":
        wait_for_shift_change(zone, args.warmup_timeout_minutes)
    platform = Platform()
    try:
        platform.wipe()
        started = datetime.now(UTC)
        platform.start()
        log("platform up (make run's launcher); waiting for the history load to be published")
        with psycopg.connect(platform.dsn("airflow"), autocommit=True) as airflow:
            deadline = time.monotonic() + args.warmup_timeout_minutes * 60
            while not history_loaded(airflow):
                if time.monotonic() > deadline:
                    log("history load not through within the warm-up timeout: measuring anyway")
                    break
                time.sleep(args.poll_s)
        window_start = datetime.now(UTC).replace(microsecond=0)
        window_end = window_start + timedelta(minutes=args.minutes)
        log(f"warm-up {(window_start - started).total_seconds() / 60:.1f} min; window "
            f"{window_start:%H:%M:%S} → {window_end:%H:%M:%S} UTC")
        observer = Observer(platform, window_start, window_end, zone)
        try:
            interrupted = False
            try:
                follow(observer, window_end,
                       window_end + timedelta(minutes=args.drain_minutes), args.poll_s)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM while following: report what was seen
                interrupted = True
                log("interrupted: reporting the events as far as they got")
            events = observer.emitted(datetime.now(UTC))
            with psycopg.connect(platform.dsn("airflow"), autocommit=True) as airflow:
                parts = {kind: breakdown(kind, events, observer.wh, airflow)
                         for kind in SYSTEM_OF}
        finally:
            observer.close()
        return {"events": events, "parts": parts,
                "window": (window_start, window_end), "interrupted": interrupted,
                "warmup_s": (window_start - started).total_seconds()}
    finally:
        # a second Ctrl-C or SIGTERM must not cut the stop short: it would leave the platform
        # running
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log("stopping the bench's platform")
        platform.stop()


def report(result: dict, args: argparse.Namespace) -> dict:
    """Print the table and return the figures. A percentile is null in the figures (so no
    earlier run's value stays in results.json beside this run's commit) when it falls on an
    event that did not reach the stage, or its kind had fewer than MIN_EVENTS events."""
    events: list[Event] = result["events"]
    figures: dict = {}
    print(f"\nlatency from the plant instant (s), window {args.minutes:g} min "
          f"{result['window'][0]:%H:%M}–{result['window'][1]:%H:%M} UTC, warm-up "
          f"{result['warmup_s'] / 60:.1f} min")
    print(f"{'kind':10} {'stage':10} {'events':>6} {'reached':>7} {'p50':>8} {'p95':>8} {'max':>8}")
    short = []
    for kind, stages in STAGES.items():
        of_kind = [e for e in events if e.kind == kind]
        figures[f"latency_{kind}_events"] = len(of_kind)
        if len(of_kind) < MIN_EVENTS:
            short.append(f"{kind}: {len(of_kind)}")
        for stage in stages:
            eligible = [e for e in of_kind if stage in e.stages()]
            # an event that never reached the stage counts as slower than every one that did:
            # a percentile that falls on one is unknown (printed ">")
            values = [(e.reached[stage] - e.at).total_seconds() if stage in e.reached
                      else math.inf for e in eligible]
            reached = [v for v in values if v != math.inf]
            p50, p95 = percentile(values, 50), percentile(values, 95)
            name = f"latency_{kind}_to_{stage}"
            figures[f"{name}_reached"] = len(reached)
            for label, value in (("p50", p50), ("p95", p95)):
                known = value is not None and value != math.inf and len(of_kind) >= MIN_EVENTS
                figures[f"{name}_{label}_s"] = round(value, 1) if known else None
            cells = [f"{'>':>8}" if v == math.inf else f"{v:8.0f}" if v is not None
                     else f"{'-':>8}" for v in (p50, p95, max(reached) if reached else None)]
            print(f"{kind:10} {stage:10} {len(eligible):6d} {len(reached):7d} {' '.join(cells)}")
    print("\nwhere the time goes (median s per event; n = events with that step)")
    print(f"{'kind':10} " + " ".join(f"{name:>14}" for name in BREAKDOWN))
    for kind, parts in result["parts"].items():
        cells = [f"{statistics.median(v):9.0f} n={len(v):<3d}" if v else f"{'-':>14}"
                 for v in (parts[name] for name in BREAKDOWN)]
        print(f"{kind:10} " + " ".join(cells))
    if short:
        print(f"\nfewer than {MIN_EVENTS} events, their percentiles not written: "
              f"{', '.join(short)}")
    complete = not result["interrupted"] and not any(e.pending() for e in events)
    if not complete:
        print(f"\nnot complete: {sum(1 for e in events if e.pending())} events missed a stage "
              f"({'interrupted' if result['interrupted'] else 'drain ran out'}); a percentile "
              "that falls on one is '>' and null in the figures")
    figures["latency_complete"] = complete
    figures["latency_window_minutes"] = args.minutes
    figures["latency_commit"] = git_commit()
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=75,
                    help="the window whose events are followed (default 75)")
    ap.add_argument("--drain-minutes", type=float, default=30,
                    help="after the window, how long to wait for its events' last stages (30)")
    ap.add_argument("--warmup-timeout-minutes", type=float, default=20,
                    help="the window opens when the history is published, at the latest after "
                         "this (default 20)")
    ap.add_argument("--align", choices=("shift", "now"), default="now",
                    help="now (default): at once; shift: start so that the window opens 5 min "
                         "before the site's next S1/S2 shift end (waits up to 8 h)")
    ap.add_argument("--poll-s", type=float, default=5.0)
    ap.add_argument("--smoke", action="store_true",
                    help="a 5-minute window and 10 minutes of drain; nothing merged")
    args = ap.parse_args()
    if args.smoke:
        args.minutes, args.drain_minutes, args.align = 5, 10, "now"

    def terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        result = measure(args)
    except KeyboardInterrupt:  # before the window or twice: nothing to report (platform stopped)
        log("interrupted: nothing to report")
        return 130
    figures = report(result, args)
    if args.smoke:
        print("\nsmoke run: nothing merged into bench/results.json")
        return 0
    merge_results(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
