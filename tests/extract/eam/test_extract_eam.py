"""extract_eam: every interval of the 14-day plant lands in raw_eam exactly as the EAM holds it;
a row that changes after insert (a failure that ends, an order that closes) keeps its latest
version per key; bad rows go to quarantine. (Re-runs and backfills:
tests/extract/erp/test_extract_sql_reruns.py.)"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from erp.helpers import (
    Loaded,
    audit_problems,
    raw_latest,
    reset_system,
    scalar,
    typed,
    world_loaded,
    world_rows,
)
from factory_platform.extract.sql import close_idle_connections

VERSION_COLUMNS = {"failures": ("ended_at", "reported_at", "started_at"),
                   "maintenance_orders": ("actual_end_at", "actual_start_at", "planned_start_at")}


def eam_source():
    from factory_platform.sources import get_source

    return get_source("eam")


def source_fields(entity):
    """The fields the EAM delivers (not the `version_at` the extractor adds)."""
    return tuple(f for f in entity.fields if f.name != "version_at")


@pytest.fixture(scope="module")
def eam_loaded(plant, warehouse_dsn) -> Loaded:
    return world_loaded(plant, warehouse_dsn, "eam")


@pytest.mark.slow  # the whole EAM history extracted (~35 s, make test runs it)
def test_every_eam_table_equals_what_the_eam_emitted(eam_loaded, plant, warehouse_dsn):
    counts = {}
    for entity in eam_source().entities:
        fields = source_fields(entity)
        expected = sorted((typed(fields, row) for row in world_rows(plant.world, "eam",
                                                                      entity.name)), key=repr)
        raw = raw_latest(warehouse_dsn, "eam", entity, fields)
        total = scalar(warehouse_dsn, f"select count(*) from raw_eam.{entity.name}")
        assert total == len(raw), f"{entity.name}: {total - len(raw)} older versions kept"
        assert len(raw) == len(expected), (entity.name, len(raw), len(expected))
        assert sorted(raw, key=repr) == expected, entity.name
        counts[entity.name] = len(raw)
    assert counts == {"equipment": 19, "failures": 347, "maintenance_orders": 371}
    loads = sum(len(s) for s in eam_loaded.summaries.values())
    print(f"\nraw_eam rows: {counts}; {len(eam_loaded.intervals)} intervals, {loads} loads "
          f"in one pool with the other SQL system's, {eam_loaded.seconds:.1f} s")


@pytest.mark.slow  # the whole EAM history extracted (~35 s, make test runs it)
def test_version_at_is_the_latest_event_the_row_records(eam_loaded, plant, warehouse_dsn):
    for table, columns in VERSION_COLUMNS.items():
        key = eam_source().entity(table).natural_key[0]
        expected = {}
        for row in world_rows(plant.world, "eam", table):
            latest = next(row[c] for c in columns if row[c])
            expected[row[key]] = datetime.fromisoformat(latest)
        with psycopg.connect(warehouse_dsn) as conn:
            loaded = dict(conn.execute(f'select "{key}", version_at from raw_eam.{table}'))
        assert loaded == expected, table
    # every failure is closed in the plant's history, so its version is its end
    assert scalar(warehouse_dsn, "select count(*) from raw_eam.failures "
                  "where version_at <> ended_at") == 0


@pytest.mark.slow  # the whole EAM history extracted (~35 s, make test runs it)
def test_audit_adds_up_and_nothing_was_quarantined(eam_loaded, warehouse_dsn):
    assert audit_problems(warehouse_dsn, "eam") == []
    with psycopg.connect(warehouse_dsn) as conn:
        audited = {r[0] for r in conn.execute(
            "select batch_id from ops.load_audit where system = 'eam'")}
    loaded = {b["batch_id"] for batches in eam_loaded.summaries.values() for b in batches}
    assert loaded <= audited and len(loaded) == sum(map(len, eam_loaded.summaries.values()))
    assert scalar(warehouse_dsn, "select count(*) from ops.quarantine where system = 'eam'") == 0


# --- a scratch copy of the EAM where rows change after insert -------------------------------

@pytest.fixture(scope="module")
def scratch_eam_databases(plant, pg):
    """A copy of the plant's EAM (tests add rows that change) and an empty scratch warehouse."""
    from plant_sim.loaders import load_system

    eam_dsn = pg.create_database("sql_test_eam")
    warehouse = pg.create_database("sql_test_eam_warehouse")
    load_system(plant.world, "eam", eam_dsn)
    yield eam_dsn, warehouse
    close_idle_connections()  # the scratch databases are dropped after the session


@pytest.fixture
def scratch_eam(scratch_eam_databases, monkeypatch):
    """`eam_db` points at the scratch EAM for one test."""
    uri = f"{os.environ['SFDP_TEST_ADMIN_URI']}/sql_test_eam"  # the harness's, like the DB
    monkeypatch.setenv("AIRFLOW_CONN_EAM_DB", uri)
    return scratch_eam_databases


def _hour(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def test_a_failure_that_ends_later_keeps_its_latest_version(scratch_eam):
    from factory_platform.extract.run import extract_interval

    eam_dsn, warehouse = scratch_eam
    reset_system(warehouse, "eam")
    with psycopg.connect(eam_dsn) as conn:  # reported at 10:02, still open
        conn.execute("insert into eam.failures values ('F99000001', 'EQ-100017', 'MECH', "
                     "'Mechanical failure', '机械故障', %s, null, %s)",
                     (_hour(10, 10), _hour(10, 10) + timedelta(minutes=2)))
        conn.execute("insert into eam.maintenance_orders values ('MO99000001', 'EQ-100017', "
                     "'CM', 'F99000001', 'Repair', '维修', null, %s, null, 'open')",
                     (_hour(10, 10) + timedelta(minutes=2),))

    def run(hour: datetime) -> None:
        for table in VERSION_COLUMNS:
            extract_interval("eam", table, hour, hour + timedelta(hours=1), dsn=warehouse)

    def versions() -> list[tuple]:
        with psycopg.connect(warehouse) as conn:
            return conn.execute(
                "select failure_id, ended_at, version_at from raw_eam.failures "
                "where failure_id = 'F99000001' union all "
                "select order_id, actual_end_at, version_at from raw_eam.maintenance_orders "
                "where order_id = 'MO99000001' order by 1, 3").fetchall()

    run(_hour(10, 10))
    opened = _hour(10, 10) + timedelta(minutes=2)
    assert versions() == [("F99000001", None, opened), ("MO99000001", None, opened)]

    closed = _hour(10, 20)  # ten hours later: beyond the 8-hour lookback
    with psycopg.connect(eam_dsn) as conn:
        conn.execute("update eam.failures set ended_at = %s where failure_id = 'F99000001'",
                     (closed,))
        conn.execute("update eam.maintenance_orders set actual_end_at = %s, status = 'closed' "
                     "where order_id = 'MO99000001'", (closed,))
    run(_hour(10, 20))
    # both versions are in raw; staging keeps the latest per key by version_at
    assert versions() == [("F99000001", None, opened), ("F99000001", closed, closed),
                          ("MO99000001", None, opened), ("MO99000001", closed, closed)]
    failures = eam_source().entity("failures")
    latest = [r for r in raw_latest(warehouse, "eam", failures, failures.fields)
              if r[0] == "F99000001"]
    assert [r[6] for r in latest] == [closed]

    # re-running the first interval replaces its window: the open version, gone from the
    # source, leaves raw; the closed one stays
    run(_hour(10, 10))
    assert versions() == [("F99000001", closed, closed), ("MO99000001", closed, closed)]
    assert audit_problems(warehouse, "eam") == []


def test_bad_eam_rows_are_quarantined_with_their_reason(scratch_eam, plant):
    from factory_platform.extract.run import extract_interval

    eam_dsn, warehouse = scratch_eam
    reset_system(warehouse, "eam")
    with psycopg.connect(eam_dsn) as conn:
        conn.execute("insert into eam.failures values ('F99000002', null, 'JAM', 'Jam', '卡料', "
                     "'2026-10-27 10:00Z', '2026-10-27 10:20Z', '2026-10-27 10:02Z')")
    summary = extract_interval("eam", "failures", plant.start, plant.end, dsn=warehouse)
    assert summary["rows_quarantined"] == 1
    assert summary["rows_loaded"] == 347 and summary["rows_read"] == 348
    with psycopg.connect(warehouse) as conn:
        quarantined = conn.execute("select record_ref, reason, source from ops.quarantine "
                                   "where system = 'eam'").fetchall()
    assert [q[:2] for q in quarantined] == [
        ("F99000002", "required field 'equipment_id' is missing or null")]
    assert quarantined[0][2].startswith("eam_db:eam.failures [")
    assert audit_problems(warehouse, "eam") == []


def test_version_window_is_index_ranges_or_ed(scratch_eam):
    """`coalesce(actual_end_at, actual_start_at, planned_start_at)` in the window is read through
    indexes (a BitmapOr of the closed orders' range and the few open ones), never by computing
    the coalesce for every row."""
    from factory_platform.extract.clients import Window
    from factory_platform.extract.sql import build_query, resolve_endpoint
    from psycopg import sql

    eam_dsn, _warehouse = scratch_eam
    with psycopg.connect(eam_dsn, autocommit=True) as conn:
        for column in VERSION_COLUMNS["maintenance_orders"]:
            conn.execute(f"create index if not exists mo_{column} "
                         f"on eam.maintenance_orders ({column})")
    window = Window(_hour(1, 2), _hour(1, 11), _hour(1, 10), _hour(1, 11))
    with psycopg.connect(eam_dsn) as conn:
        conn.execute("set enable_seqscan = off")  # a small table: make the planner show its choice
        query = build_query(conn, resolve_endpoint("eam_db"),
                            eam_source().entity("maintenance_orders"), window)
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL("explain ") + query.statement,
                                                     query.params))
    assert "BitmapOr" in plan and "Seq Scan" not in plan, plan
    assert "Bitmap Index Scan on mo_actual_end_at" in plan, plan
    assert ("Index Cond: ((actual_end_at >= '2026-11-01 02:00:00+00'::timestamp with time zone) "
            "AND (actual_end_at < '2026-11-01 11:00:00+00'") in plan, plan
