"""Nothing lost by the load itself: outages longer than the lookback, failed batches, long load
transactions, records the database refuses. Every test counts records: what the plant emitted
= raw rows + quarantined rows."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from factory_platform.extract import run as extract_run
from factory_platform.extract.load import (
    Extraction,
    LoadTarget,
    SourceRecord,
    load_batch,
)
from factory_platform.extract.run import (
    extract_interval,
    extract_scheduled,
    watermark_of,
)
from factory_platform.fields import Field
from factory_platform.sources import get_source

ENTITY = "confirmations"


def reset_mes(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("drop schema if exists raw_mes cascade")
        for table in ("quarantine", "load_audit", "extract_watermark", "source_incident"):
            conn.execute(f"delete from ops.{table} where system = 'mes'")


def emitted_versions(plant, start: datetime, end: datetime) -> set[tuple[str, str]]:
    """(id, updated_at) of every confirmation version the plant's API serves in [start, end)."""
    with sqlite3.connect(plant.world / "mes" / "mes.sqlite") as db:
        bodies = [json.loads(body) for (body,) in db.execute(f"select body from {ENTITY}")]
    versions = set()
    for body in bodies:
        try:
            at = datetime.fromisoformat(str(body["updated_at"]))
        except (KeyError, TypeError, ValueError):
            continue
        if start <= at < end:
            versions.add((body.get("confirmation_id"), at.isoformat()))
    return versions


def loaded_versions(dsn: str, start: datetime, end: datetime) -> set[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        conn.execute("set timezone = 'UTC'")
        rows = conn.execute(
            f"select confirmation_id, updated_at from raw_mes.{ENTITY} "
            "where updated_at >= %s and updated_at < %s", (start, end)).fetchall()
    return {(key, at.isoformat()) for key, at in rows}


def quarantined_refs(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {ref for (ref,) in conn.execute(
            "select record_ref from ops.quarantine where system = 'mes' and entity = %s",
            (ENTITY,))}


@pytest.fixture()
def mes(plant, warehouse_dsn):
    from factory_platform.warehouse import ensure_warehouse

    ensure_warehouse(warehouse_dsn)
    reset_mes(warehouse_dsn)
    yield warehouse_dsn
    reset_mes(warehouse_dsn)


def busy_day(plant) -> datetime:
    return (plant.start + timedelta(days=3)).replace(hour=6, minute=0, second=0, microsecond=0)


def test_an_outage_longer_than_the_lookback_is_caught_up_by_the_next_scheduled_run(plant, mes):
    """Before: the first run after a 20-hour outage read its interval and 2 h of lookback; the
    18 hours before were never extracted. Now it loads from the high-water mark in slices."""
    source = get_source("mes")
    first = (busy_day(plant), busy_day(plant) + timedelta(minutes=15))
    extract_scheduled("mes", ENTITY, *first, dsn=mes)
    assert watermark_of(mes, "mes", ENTITY) == first[1]

    outage = timedelta(hours=20)
    after = (first[1] + outage, first[1] + outage + timedelta(minutes=15))
    assert outage > source.lookback
    summary = extract_scheduled("mes", ENTITY, *after, dsn=mes)

    span = (first[0] - source.lookback, after[1])
    emitted = emitted_versions(plant, *span)
    missed = emitted_versions(plant, first[1], after[0] - source.lookback)
    assert len(missed) > 20, "the outage must hide records a lookback cannot reach"
    loaded = loaded_versions(mes, *span)
    quarantined = quarantined_refs(mes)
    assert {v for v in emitted if v[0] not in quarantined} == loaded
    assert summary["caught_up_batches"] == 4  # 20 h in 6-hour slices
    assert watermark_of(mes, "mes", ENTITY) == after[1]


def test_a_failed_batch_is_retried_by_the_next_runs_until_it_loads(plant, mes, monkeypatch):
    """A run whose extraction fails leaves the mark where it was and opens an incident; the
    next scheduled run loads the failed window first and closes it."""
    start = busy_day(plant)
    intervals = [(start + timedelta(minutes=15 * i), start + timedelta(minutes=15 * (i + 1)))
                 for i in range(4)]
    extract_scheduled("mes", ENTITY, *intervals[0], dsn=mes)

    real_client_for = extract_run.client_for

    class DownSource:
        @staticmethod
        def open_extraction(source, entity, window):
            raise ConnectionError(f"{source.system} API down")

    monkeypatch.setattr(extract_run, "client_for", lambda interface: DownSource)
    for interval in intervals[1:3]:  # two runs fail (after their retries)
        with pytest.raises(ConnectionError):
            extract_scheduled("mes", ENTITY, *interval, dsn=mes)
    assert watermark_of(mes, "mes", ENTITY) == intervals[0][1]
    with psycopg.connect(mes) as conn:
        open_incidents = conn.execute(
            "select kind, times_seen from ops.source_incident where system = 'mes' "
            "and resolved_at is null").fetchall()
    # the second run failed again on the first window it had to catch up: one incident, twice
    assert open_incidents == [("batch_failed", 2)]

    monkeypatch.setattr(extract_run, "client_for", real_client_for)
    summary = extract_scheduled("mes", ENTITY, *intervals[3], dsn=mes)
    assert summary["caught_up_batches"] == 1
    assert watermark_of(mes, "mes", ENTITY) == intervals[3][1]
    span = (intervals[0][0] - get_source("mes").lookback, intervals[3][1])
    quarantined = quarantined_refs(mes)
    assert {v for v in emitted_versions(plant, *span) if v[0] not in quarantined} == \
        loaded_versions(mes, *span)
    with psycopg.connect(mes) as conn:
        assert conn.execute("select count(*) from ops.source_incident where system = 'mes' "
                            "and resolved_at is null").fetchone()[0] == 0


def test_a_backfill_of_old_days_never_moves_the_mark_over_a_gap(plant, mes):
    start = busy_day(plant)
    extract_scheduled("mes", ENTITY, start, start + timedelta(minutes=15), dsn=mes)
    extract_interval("mes", ENTITY, start + timedelta(hours=5), start + timedelta(hours=6),
                     dsn=mes)  # a reload beyond a gap
    assert watermark_of(mes, "mes", ENTITY) == start + timedelta(minutes=15)
    extract_interval("mes", ENTITY, start - timedelta(days=1), start, dsn=mes)  # older days
    assert watermark_of(mes, "mes", ENTITY) == start + timedelta(minutes=15)
    extract_interval("mes", ENTITY, start + timedelta(minutes=15), start + timedelta(hours=5),
                     dsn=mes)  # closes the gap at the mark's edge
    assert watermark_of(mes, "mes", ENTITY) == start + timedelta(hours=5)


# --- the load transaction itself -----------------------------------------------------------------

T0 = datetime(2026, 10, 20, tzinfo=UTC)
TARGET = LoadTarget(
    system="faulttest", entity="readings",
    fields=(Field("reading_id", required=True), Field("note"),
            Field("qty", "int", required=True, minimum=0),
            Field("read_at", "timestamptz", required=True)),
    natural_key=("reading_id",), replace_column="read_at", max_reject_share=0.2,
)


def reading(i: int, **override) -> SourceRecord:
    payload = {"reading_id": f"R{i}", "note": f"n{i}", "qty": i,
               "read_at": (T0 + timedelta(minutes=i)).isoformat()}
    payload.update(override)
    return SourceRecord(source="page 1", record_ref=f"R{i}", payload=payload)


@pytest.fixture()
def scratch(warehouse_dsn):
    from factory_platform.warehouse import ensure_warehouse

    ensure_warehouse(warehouse_dsn)
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("drop schema if exists raw_faulttest cascade")
        for table in ("quarantine", "load_audit", "extract_watermark", "source_incident"):
            conn.execute(f"delete from ops.{table} where system = 'faulttest'")
        conn.execute("delete from ops.transform_run")
    yield warehouse_dsn
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("delete from ops.transform_run")


def load(dsn, records, **kwargs):
    extraction = Extraction(records=records, source_label="test api", **kwargs)
    return load_batch(dsn, TARGET, extraction, interval_start=T0,
                      interval_end=T0 + timedelta(hours=1), window_start=T0)


def test_a_record_the_database_refuses_is_quarantined_and_the_rest_loads(scratch):
    """Before: one NUL byte (Postgres text cannot hold it) failed the whole batch. Now the
    refused record goes to quarantine with the database's reason; the other 99 load."""
    records = [reading(i) for i in range(100)]
    records[37] = reading(37, note="bad\x00byte")  # refused by the driver for Postgres
    records[52] = reading(52, qty=10**30)  # refused by the server: bigint out of range
    records[81] = reading(81, extra_field="\x00")  # _extra jsonb: \u0000 refused by the server
    result = load(scratch, records)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (100, 97, 3)
    with psycopg.connect(scratch) as conn:
        assert conn.execute("select count(*) from raw_faulttest.readings").fetchone()[0] == 97
        refused = conn.execute(
            "select record_ref, reason, raw_payload from ops.quarantine "
            "where system = 'faulttest' order by record_ref").fetchall()
    assert [ref for ref, _, _ in refused] == ["R37", "R52", "R81"]
    assert all(reason.startswith("refused by the database: ") for _, reason, _ in refused)
    assert "NUL" in refused[0][1] and '"bad\\u0000byte"' in refused[0][2]  # the payload kept
    assert "out of range" in refused[1][1]
    assert "Unicode" in refused[2][1] or "NUL" in refused[2][1]


def test_an_empty_answer_where_rows_were_is_refused_not_applied(scratch):
    load(scratch, [reading(i) for i in range(10)])
    from factory_platform.extract.load import EmptyAnswerRefused

    with pytest.raises(EmptyAnswerRefused, match="answered no records"):
        load(scratch, [], empty_is_deletion=False)
    with psycopg.connect(scratch) as conn:
        assert conn.execute("select count(*) from raw_faulttest.readings").fetchone()[0] == 10
        assert conn.execute("select status from ops.load_audit where system = 'faulttest'"
                            ).fetchone()[0] == "refused"
    load(scratch, [], empty_is_deletion=True)  # a source whose empty window means deletion
    with psycopg.connect(scratch) as conn:
        assert conn.execute("select count(*) from raw_faulttest.readings").fetchone()[0] == 0


def test_a_load_that_commits_after_the_transform_looked_is_transformed_next(scratch,
                                                                            monkeypatch):
    """Before: a batch's finished_at was its transaction's start, so a load longer than the
    transform's overlap looked older than the last transform run and was never transformed.
    Now finished_at is the commit time: the next run takes it, whatever the overlap."""
    from factory_platform import transform_window

    monkeypatch.setattr(transform_window, "OVERLAP", timedelta(0))
    looked = threading.Event()

    def slow_records():
        yield from (reading(i) for i in range(5))
        # mid-load, a transform run looks at the audit and succeeds
        transform_window.open_run(scratch, "transform-during-load")
        transform_window.close_run(scratch, "transform-during-load")
        looked.set()
        yield from (reading(i) for i in range(5, 10))

    with psycopg.connect(scratch) as conn:  # a previous successful run, long ago
        conn.execute("insert into ops.transform_run (run_id, audit_upto, batches, succeeded_at) "
                     "values ('earlier', now() - interval '1 day', 0, now() - interval '1 day')")
    load(scratch, slow_records())
    assert looked.is_set()
    window = transform_window.open_run(scratch, "transform-after-load")
    assert datetime.fromisoformat(window["interval_start"]) == T0
    assert datetime.fromisoformat(window["interval_end"]) == T0 + timedelta(hours=1)


def test_an_answer_cut_short_is_refused_not_applied(scratch):
    """Found by `make chaos`: a follow-up page that came back empty ended the window early, and
    the shorter answer replaced the window — 2,240 QMS versions deleted. A change feed never
    drops a version, so an answer lacking versions raw holds is refused; raw stays as it was."""
    from factory_platform.extract.load import IncompleteAnswerRefused

    load(scratch, [reading(i) for i in range(10)])
    with pytest.raises(IncompleteAnswerRefused, match="lacks 4 version"):
        load(scratch, [reading(i) for i in range(6)], empty_is_deletion=False)
    with psycopg.connect(scratch) as conn:
        assert conn.execute("select count(*) from raw_faulttest.readings").fetchone()[0] == 10
    result = load(scratch, [reading(i) for i in range(12)], empty_is_deletion=False)
    assert (result.rows_loaded, result.rows_replaced) == (12, 10)  # a longer answer applies
