"""The extraction task: read one window of one entity through its system's client, load it.

Called by every `extract_<system>` DAG task with the run's data interval. Clients resolve
Airflow connections, so pointing the platform at a real plant is configuration only.

**No gaps (high-water marks).** Each entity remembers in `ops.extract_watermark` the end of the
time it has loaded and committed without a gap (`load.Batch.record_watermark`, in the batch's
own transaction). A scheduled run (`extract_scheduled`) first loads the time between that mark and
its own interval — missed while the scheduler was down (the DAGs do not catch up run by run),
or left by batches that failed — in slices of `source.catchup_slice`, at most
`source.max_catchup_slices` per run and within half the task's time limit; the next runs go
on from where it stopped. So an outage of any length, or a window that failed for days, is
loaded by the following runs without a human. Backfills and reloads (`extract_interval`)
load exactly their window and move the mark only when they close a gap at its edge.

**Failures are visible.** A batch that fails is recorded as a source incident (its exception's
`incident_kind`, else `batch_failed`; see `extract.incidents`) before the task fails and
Airflow retries; the next batch of the entity that loads clears it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import datetime, timedelta

from factory_platform.extract import incidents, load
from factory_platform.extract.clients import Window, client_for
from factory_platform.sources import Entity, Source, get_source
from factory_platform.warehouse import ensure_warehouse_once, warehouse_dsn

log = logging.getLogger(__name__)


def load_target(source: Source, entity: Entity) -> load.LoadTarget:
    return load.LoadTarget(
        system=source.system, entity=entity.name, fields=entity.fields,
        natural_key=entity.natural_key, replace_column=entity.cursor,
        max_reject_share=source.max_reject_share,
    )


def is_snapshot(entity: Entity) -> bool:
    """A snapshot (whole master-data table each run) has no position in time."""
    return entity.option("mode") == "snapshot"


def is_stream(source: Source) -> bool:
    """A stream (MQTT) is landed by its own long-running process, not read by the task: the
    task closes its interval instead (the client's `close_interval`: what landed, and for a
    scheduled run whether the process does its job), and there is no high-water mark to catch
    up from."""
    return getattr(client_for(source.interface), "STREAMING", False)


def close_stream_interval(source: Source, entity: Entity, interval_start: datetime,
                          interval_end: datetime, run_id: str | None, dsn: str,
                          scheduled: bool) -> dict:
    """A stream's task; its failure (the ingest not doing its job) is an incident."""
    try:
        return client_for(source.interface).close_interval(
            source, entity, interval_start, interval_end, run_id=run_id, dsn=dsn,
            check_ingest=scheduled)
    except Exception as exc:
        _record_failure(dsn, source.system, entity.name,
                        Window(start=interval_start, end=interval_end,
                               interval_start=interval_start, interval_end=interval_end), exc)
        raise


def extract_interval(system: str, entity_name: str, interval_start: datetime,
                     interval_end: datetime, run_id: str | None = None,
                     dsn: str | None = None, watermark: str = "advance") -> dict:
    """Extract `[interval_start - lookback, interval_end)` of one entity into raw_<system>."""
    source = get_source(system)
    entity = source.entity(entity_name)
    dsn = dsn or warehouse_dsn()
    window = Window(start=interval_start - source.lookback, end=interval_end,
                    interval_start=interval_start, interval_end=interval_end)
    if is_stream(source):  # a backfill or a reload: what raw holds
        return close_stream_interval(source, entity, interval_start, interval_end, run_id, dsn,
                                     scheduled=False)
    try:
        extraction = client_for(source.interface).open_extraction(source, entity, window)
        result = load.load_batch(
            dsn, load_target(source, entity), extraction,
            interval_start=interval_start, interval_end=interval_end, window_start=window.start,
            run_id=run_id, watermark="keep" if is_snapshot(entity) else watermark,
        )
    except Exception as exc:
        _record_failure(dsn, system, entity_name, window, exc)
        raise
    log.info("%s.%s [%s, %s) from %s: read %d, loaded %d, quarantined %d, duplicates %d, "
             "replaced %d", system, entity_name, window.start, interval_end,
             extraction.source_label, result.rows_read, result.rows_loaded,
             result.rows_quarantined, result.duplicates_skipped, result.rows_replaced)
    if extraction.incidents or result.files_rejected:
        incidents.alert_new(dsn, system)
    return asdict(result)


def _record_failure(dsn: str, system: str, entity: str, window: Window,
                    exc: Exception) -> None:
    """Open (or count) the incident for a failed batch; never masks the original error."""
    import psycopg

    kind = getattr(exc, "incident_kind", "batch_failed")
    subject = (f"[{window.interval_start.isoformat()}, {window.interval_end.isoformat()})"
               if kind == "batch_failed" else entity)
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:1000]
    try:
        ensure_warehouse_once(dsn)
        with psycopg.connect(dsn) as conn:
            incidents.record(conn, system, entity,
                             [incidents.Incident(kind, subject, reason)])
    except Exception as record_error:  # noqa: BLE001 — the batch's own error is what counts
        log.warning("could not record the incident of %s.%s: %s", system, entity,
                    type(record_error).__name__)


def release_plant_connections() -> None:
    """Close the plant sessions this process keeps for reuse (sql.source_connection). The
    extraction task calls it before it ends: its pool slot goes to the next task only once
    the plant no longer sees its session."""
    from factory_platform.extract.sql import close_idle_connections

    close_idle_connections()


def watermark_of(dsn: str, system: str, entity: str) -> datetime | None:
    import psycopg

    ensure_warehouse_once(dsn)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select loaded_upto from ops.extract_watermark "
                           "where system = %s and entity = %s", (system, entity)).fetchone()
    return row[0] if row else None


def catchup_slices(upto: datetime, until: datetime, size: timedelta,
                   limit: int) -> list[tuple[datetime, datetime]]:
    """Consecutive windows from the high-water mark `upto` towards `until`, at most `limit`."""
    slices = []
    start = upto
    while start < until and len(slices) < limit:
        end = min(start + size, until)
        slices.append((start, end))
        start = end
    return slices


def extract_scheduled(system: str, entity_name: str, interval_start: datetime,
                      interval_end: datetime, run_id: str | None = None,
                      dsn: str | None = None) -> dict:
    """A scheduled run: first the time since the entity's high-water mark that no batch has
    loaded yet (slices), then the run's own interval (which creates the mark on a first run)."""
    source = get_source(system)
    entity = source.entity(entity_name)
    dsn = dsn or warehouse_dsn()
    if is_stream(source):
        return close_stream_interval(source, entity, interval_start, interval_end, run_id, dsn,
                                     scheduled=True)
    if is_snapshot(entity):
        return extract_interval(system, entity_name, interval_start, interval_end, run_id, dsn)
    began = time.monotonic()
    budget = source.task_timeout.total_seconds() / 2
    caught_up: list[dict] = []
    upto = watermark_of(dsn, system, entity_name)
    if upto is not None and upto < interval_start:
        slices = catchup_slices(upto, interval_start, source.catchup_slice,
                                source.max_catchup_slices)
        log.warning("%s.%s: loaded up to %s only; catching up %s in %d slice(s)", system,
                    entity_name, upto.isoformat(), f"[{upto.isoformat()}, "
                    f"{interval_start.isoformat()})", len(slices))
        for start, end in slices:
            if time.monotonic() - began > budget:
                log.warning("%s.%s: catch-up stops at %s (half the task's time used); the "
                            "next run goes on", system, entity_name, start.isoformat())
                break
            caught_up.append(extract_interval(system, entity_name, start, end, run_id, dsn))
    summary = extract_interval(system, entity_name, interval_start, interval_end, run_id, dsn,
                               watermark="start")
    summary["caught_up_batches"] = len(caught_up)
    summary["caught_up_rows_loaded"] = sum(s["rows_loaded"] for s in caught_up)
    return summary


def extract_windows(system: str, windows: list[tuple[datetime, datetime]],
                    dsn: str | None = None) -> None:
    """Every entity of a system over consecutive windows, without Airflow (a history load in a
    test or a benchmark): a snapshot entity (master data) once, at the last window."""
    for entity in get_source(system).entities:
        if is_snapshot(entity):
            extract_interval(system, entity.name, *windows[-1], dsn=dsn)
            continue
        for start, end in windows:
            extract_interval(system, entity.name, start, end, dsn=dsn)
