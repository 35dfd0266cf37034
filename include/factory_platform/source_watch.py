"""Noticing silence: a source that goes quiet is seen, recorded and alerted — once.

Two checks, run by the `watch_sources` DAG every 10 minutes, as the transformer (it reads
`ops` and owns `dq`):

* **Source freshness** (`run_source_freshness`): one `dbt source freshness` process over every
  raw table whose dbt source declares `loaded_at_field` and thresholds (the staging
  `_<system>__sources.yml`: newest `_extracted_at` vs `warn_after` / `error_after`), its
  artifacts in a directory of its own. Each table's result — status (pass, warn, error,
  runtime error), newest load, when it was measured, age and both thresholds — is one row of
  `dq.source_freshness`, kept as history. It says whether *data* keeps arriving.
* **Not seen** (`check_not_seen`): whether the *extraction* keeps landing batches. An entity is
  silent when its newest loaded batch (`ops.load_audit`, status `loaded`: committed and
  applied) finished longer ago than its system's threshold: `2 × cadence + GRACE`, the cadence
  being the longest gap between two runs of the registry's `schedule_cron` (MES, QMS every
  15 min → 40 min; the hourly systems → 2 h 10 min; PLM daily → 48 h 10 min). Twice the
  cadence tolerates one run that fails or is late; GRACE covers a run's own duration (retries
  included) and the watch's period. A system with a silent entity has one open incident in
  `dq.source_not_seen` (`opened_at`, the silent entities with their last batch), alerted once
  when it opens; entities that fall silent later join it without a new alert. An entity is
  back when a batch newer than the one it was silent on has loaded; when all are back the
  incident is cleared (`cleared_at`) and that is alerted once. Entities that never loaded
  (a new system before its first run) are not watched: freshness shows them as `error`.

A file-drop source whose exporter stops still commits (empty) batches, so it stays "seen":
its silence shows as stale freshness instead. Both land in `reporting.rpt_source_health` and
at the top of the HTML report.

`extraction_deadline` is the DeadlineAlert of every extraction DAG (dag_factory): a run not
finished `cadence + GRACE` after it was queued is alerted by the triggerer
(alerts.WebhookNotifier); backfill runs, which wait for their turn, are not. Airflow 3.3.2's
`dag.test()` (and so `airflow dags test`) fails at the end of a successful run of a DAG with a
deadline — its in-memory serialization leaves the alerts as dicts, which
`DagRun.update_state` looks up as ids (apache/airflow#73428, fix pending in #73430). The
scheduler's path is not affected (a queued run gets its Deadline row: tested); the test suite,
which runs the DAGs with `dag.test()`, runs them without their deadline (tests/conftest.py).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

log = logging.getLogger(__name__)

GRACE = timedelta(minutes=10)
FRESHNESS_PERIOD_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


# --------------------------------------------------------------------------- cadence


@lru_cache(maxsize=64)
def cron_cadence(schedule_cron: str) -> timedelta:
    """The longest gap between two consecutive runs of `schedule_cron` over two weeks (so a
    daily or weekly cron gives its real period, an irregular one its longest pause)."""
    from croniter import croniter

    start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: whole weeks after it
    runs = croniter(schedule_cron, start)
    times = [runs.get_next(datetime) for _ in range(2)]
    while times[-1] < start + timedelta(days=14) and len(times) < 20_000:
        times.append(runs.get_next(datetime))
    return max(later - earlier for earlier, later in pairwise(times))


def cadence(source) -> timedelta:
    return cron_cadence(source.schedule_cron)


def not_seen_after(source) -> timedelta:
    """How long an entity of `source` may go without a loaded batch before it is silent."""
    return 2 * cadence(source) + GRACE


def run_deadline(source) -> timedelta:
    """How long after it was queued a run of `extract_<system>` must be finished."""
    return cadence(source) + GRACE


def extraction_deadline(source):
    """The DeadlineAlert for `extract_<system>`: late runs are alerted by the triggerer through
    the webhook notifier (backfill runs, which wait for their turn, are not)."""
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    from factory_platform.alerts import WebhookNotifier

    return DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT,
                         interval=run_deadline(source), callback=AsyncCallback(WebhookNotifier),
                         name=f"{source.dag_id} not finished in time")


def _minutes(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


# --------------------------------------------------------------------------- freshness


class SourceFreshnessError(RuntimeError):
    """`dbt source freshness` did not run (no sources.json): nothing was measured."""


@dataclass(frozen=True)
class FreshnessResult:
    source_name: str
    table_name: str
    status: str  # pass | warn | error | runtime error
    max_loaded_at: datetime | None  # None: the table holds no row
    snapshotted_at: datetime | None
    age_seconds: float | None
    warn_after_seconds: float | None
    error_after_seconds: float | None
    error: str | None = None


def _threshold_seconds(threshold: dict | None) -> float | None:
    if not threshold or threshold.get("count") is None or not threshold.get("period"):
        return None
    return float(threshold["count"]) * FRESHNESS_PERIOD_SECONDS[threshold["period"]]


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return None if moment.year <= 1 else moment  # dbt's "never loaded" is 0001-01-01


def parse_freshness_results(sources_json: dict) -> list[FreshnessResult]:
    """The rows of dbt's `sources.json` (schema v3): one per source table."""
    results = []
    for result in sources_json["results"]:
        _, _, source_name, table_name = result["unique_id"].split(".", 3)
        status = str(result["status"])
        if status == "runtime error":
            results.append(FreshnessResult(source_name, table_name, status, None, None, None,
                                           None, None, str(result.get("error") or "")[:2000]))
            continue
        max_loaded_at = _timestamp(result.get("max_loaded_at"))
        criteria = result.get("criteria") or {}
        results.append(FreshnessResult(
            source_name, table_name, status, max_loaded_at, _timestamp(result.get("snapshotted_at")),
            None if max_loaded_at is None else float(result["max_loaded_at_time_ago_in_s"]),
            _threshold_seconds(criteria.get("warn_after")),
            _threshold_seconds(criteria.get("error_after"))))
    return results


def run_source_freshness(dsn: str, run_id: str, select: tuple[str, ...] = ()) -> list[FreshnessResult]:
    """`dbt source freshness` (every source with thresholds, or `select`) against `dsn`, its
    results recorded in dq.source_freshness under `run_id`; returns them."""
    from factory_platform.dbt_project import run_dbt
    from factory_platform.warehouse import ensure_warehouse_once

    ensure_warehouse_once(dsn)
    with tempfile.TemporaryDirectory(prefix="dbt-freshness-") as target:
        # dbt parses the project before it measures: run_dbt hands it the partial-parse state
        # of the last command, so it parses only what changed, every few minutes
        select_args = ("--select", *select) if select else ()
        done = run_dbt(dsn, "source", "freshness", *select_args, target_path=target)
        results_file = Path(target) / "sources.json"
        if not results_file.exists():
            raise SourceFreshnessError(f"dbt source freshness did not run:\n{done.stdout[-4000:]}"
                                       f"\n{done.stderr[-2000:]}")
        results = parse_freshness_results(json.loads(results_file.read_text()))
    record_freshness(dsn, run_id, results)
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "warn", "error")}
    log.info("source freshness of %d tables: %s", len(results), counts)
    return results


def record_freshness(dsn: str, run_id: str, results: list[FreshnessResult]) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into dq.source_freshness (run_id, source_name, table_name, status, "
            "max_loaded_at, snapshotted_at, age_seconds, warn_after_seconds, "
            "error_after_seconds, error) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(run_id, r.source_name, r.table_name, r.status, r.max_loaded_at, r.snapshotted_at,
              r.age_seconds, r.warn_after_seconds, r.error_after_seconds, r.error)
             for r in results])


# --------------------------------------------------------------------------- not seen


@dataclass
class NotSeenChanges:
    """What one check changed: systems whose incident opened, or cleared."""

    as_of: datetime
    opened: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    alerts_sent: int = 0


def check_not_seen(dsn: str, run_id: str, as_of: datetime | None = None,
                   systems: tuple[str, ...] | None = None) -> NotSeenChanges:
    """Open, update or clear each system's not-seen incident from the newest loaded batch of
    each of its entities, as of `as_of` (default: the database's clock), then send the
    alerts not sent yet. `systems` restricts the check (default: the whole registry)."""
    import psycopg
    from psycopg.types.json import Jsonb

    from factory_platform.sources import all_sources
    from factory_platform.warehouse import ensure_warehouse_once

    ensure_warehouse_once(dsn)
    sources = {name: s for name, s in all_sources().items() if systems is None or name in systems}
    with psycopg.connect(dsn) as conn:
        # one watch at a time (this mode conflicts with itself, not with readers): an incident
        # is opened and cleared once
        conn.execute("lock table dq.source_not_seen in share row exclusive mode")
        if as_of is None:
            as_of = conn.execute("select clock_timestamp()").fetchone()[0]
        changes = NotSeenChanges(as_of=as_of)
        newest = {(system, entity): finished for system, entity, finished in conn.execute(
            "select system, entity, max(finished_at) from ops.load_audit "
            "where status = 'loaded' group by system, entity")}
        open_incidents = {system: (incident_id, silent) for incident_id, system, silent in
                          conn.execute("select incident_id, system, silent_entities "
                                       "from dq.source_not_seen where cleared_at is null")}
        for system, source in sources.items():
            threshold = not_seen_after(source)
            watched = {e.name: newest[(system, e.name)] for e in source.entities
                       if (system, e.name) in newest}
            silent_now = {name: last for name, last in watched.items()
                          if as_of - last > threshold}
            incident = open_incidents.get(system)
            if incident is None:
                if silent_now:
                    conn.execute(
                        "insert into dq.source_not_seen (system, silent_entities, "
                        "threshold_seconds, last_loaded_at, opened_at, opened_in_run) "
                        "values (%s, %s, %s, %s, %s, %s)",
                        (system, Jsonb({n: _iso(t) for n, t in silent_now.items()}),
                         threshold.total_seconds(), max(silent_now.values()), as_of, run_id))
                    changes.opened.append(system)
                continue
            incident_id, silent_before = incident
            # still silent: no batch newer than the one it fell silent on; newly silent: join
            still = {name: last for name, last in silent_before.items()
                     if name in watched and watched[name] <= datetime.fromisoformat(last)}
            still.update({name: _iso(last) for name, last in silent_now.items()
                          if name not in silent_before})
            if not still:
                conn.execute("update dq.source_not_seen set cleared_at = %s, cleared_in_run = %s "
                             "where incident_id = %s", (as_of, run_id, incident_id))
                changes.cleared.append(system)
            elif still != silent_before:
                conn.execute("update dq.source_not_seen set silent_entities = %s "
                             "where incident_id = %s", (Jsonb(still), incident_id))
    changes.alerts_sent = alert_not_seen(dsn)
    return changes


def alert_not_seen(dsn: str) -> int:
    """Send each not-seen alert not sent yet — the opening, then the clearing, of each
    incident — and mark it sent in the same transaction; returns how many were sent."""
    import psycopg

    from factory_platform.alerts import send_alert

    sent = 0
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select incident_id, system, silent_entities, threshold_seconds, opened_at, "
            "cleared_at, open_alerted_at from dq.source_not_seen "
            "where open_alerted_at is null or (cleared_at is not null and clear_alerted_at is null) "
            "order by incident_id for update skip locked").fetchall()
        for incident_id, system, silent, threshold, opened_at, cleared_at, open_alerted in rows:
            threshold_text = _minutes(timedelta(seconds=threshold))
            if open_alerted is None:
                entities = ", ".join(f"{name} (last batch {_utc(last)})"
                                     for name, last in sorted(silent.items()))
                send_alert(f"Source not seen: {system}",
                           f"no batch of {system} loaded for more than {threshold_text} "
                           f"(as of {_utc(opened_at)}): {entities}",
                           system=system, kind="not_seen", state="open",
                           entities=sorted(silent), opened_at=opened_at)
                conn.execute("update dq.source_not_seen set open_alerted_at = clock_timestamp() "
                             "where incident_id = %s", (incident_id,))
                sent += 1
            if cleared_at is not None:
                send_alert(f"Source seen again: {system}",
                           f"batches of {system} load again; not seen from {_utc(opened_at)} "
                           f"to {_utc(cleared_at)}",
                           system=system, kind="not_seen", state="cleared",
                           opened_at=opened_at, cleared_at=cleared_at)
                conn.execute("update dq.source_not_seen set clear_alerted_at = clock_timestamp() "
                             "where incident_id = %s", (incident_id,))
                sent += 1
    return sent


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _utc(value) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
