"""extract_erp: every interval of the 14-day plant lands in raw_erp exactly as the ERP holds it;
the DST night places each local time once; bad rows go to quarantine; the ERP's answers to
postings are read back; the DAG runs through Airflow. (Re-runs and backfills:
test_extract_sql_reruns.py.)"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from factory_platform.extract.sql import close_idle_connections

from erp.helpers import (
    Loaded,
    audit_problems,
    extract_intervals,
    first_differences,
    hourly,
    raw_contents,
    raw_latest,
    reset_system,
    scalar,
    typed,
    world_loaded,
    world_rows,
)

LOCAL_TIME_TABLES = {"sales_orders": "created_at", "production_orders": "released_at",
                     "purchase_orders": "ordered_at"}


def erp_source():
    from factory_platform.sources import get_source

    return get_source("erp")


def source_fields(entity):
    """The fields the ERP delivers (not the UTC instants the extractor adds)."""
    return tuple(f for f in entity.fields if not f.name.endswith("_utc"))


@pytest.fixture(scope="module")
def erp_loaded(plant, warehouse_dsn) -> Loaded:
    return world_loaded(plant, warehouse_dsn, "erp")


def test_every_erp_table_equals_what_the_erp_emitted(erp_loaded, plant, warehouse_dsn):
    counts = {}
    for entity in erp_source().entities:
        fields = source_fields(entity)
        expected = sorted((typed(fields, row) for row in world_rows(plant.world, "erp",
                                                                      entity.name)), key=repr)
        raw = raw_latest(warehouse_dsn, "erp", entity, fields)
        total = scalar(warehouse_dsn, f"select count(*) from raw_erp.{entity.name}")
        assert total == len(raw), f"{entity.name}: {total - len(raw)} rows repeat a key"
        assert len(raw) == len(expected), (entity.name, len(raw), len(expected))
        assert sorted(raw, key=repr) == expected, entity.name
        counts[entity.name] = len(raw)
    assert counts["production_orders"] == 79 and counts["sales_orders"] == 79
    assert counts["purchase_orders"] == 67 and counts["inventory_balances"] == 70
    assert counts["materials"] == 10 and counts["plants"] == 1
    assert counts["inbound_postings"] == 0  # nothing posted to this ERP yet
    loads = sum(len(s) for s in erp_loaded.summaries.values())
    print(f"\nraw_erp rows: {counts}; {len(erp_loaded.intervals)} intervals, {loads} loads "
          f"in one pool with the other SQL system's, {erp_loaded.seconds:.1f} s")


def test_local_times_carry_the_instant_the_plant_recorded(erp_loaded, plant, warehouse_dsn):
    """`<column>_utc` = the UTC instant of the ERP's local time (the simulator's `_visible_at`
    is that instant for orders: they become visible when created, released or ordered)."""
    for table, column in LOCAL_TIME_TABLES.items():
        key = erp_source().entity(table).natural_key[0]
        expected = {row[key]: datetime.fromisoformat(row["_visible_at"])
                    for row in world_rows(plant.world, "erp", table)}
        with psycopg.connect(warehouse_dsn) as conn:
            loaded = dict(conn.execute(f'select "{key}", "{column}_utc" from raw_erp.{table}'))
        assert loaded == expected, table


def test_audit_adds_up_and_nothing_was_quarantined(erp_loaded, warehouse_dsn):
    assert audit_problems(warehouse_dsn, "erp") == []
    with psycopg.connect(warehouse_dsn) as conn:
        audited = {r[0] for r in conn.execute(
            "select batch_id from ops.load_audit where system = 'erp'")}
    loaded = {b["batch_id"] for batches in erp_loaded.summaries.values() for b in batches}
    assert loaded <= audited and len(loaded) == sum(map(len, erp_loaded.summaries.values()))
    assert len(erp_loaded.summaries["production_orders"]) == len(erp_loaded.intervals)
    # the plant injects no ERP defects: every row it emitted is loaded, none quarantined
    assert scalar(warehouse_dsn, "select count(*) from ops.quarantine where system = 'erp'") == 0
    read, loaded = scalar(warehouse_dsn, "select array[sum(rows_read), sum(rows_loaded)] from "
                          "ops.load_audit where system = 'erp' and entity = 'production_orders'")
    assert read == loaded >= 79  # every order is read once per window that holds it


# --- a scratch copy of the ERP with rows on the DST night, bad rows and postings -------------

DST_PRODUCTION_ORDERS = {  # local released_at on 2026-10-25 (Europe/Berlin) → expected UTC
    "9000006": ("2026-10-25 00:59:59", "2026-10-24T22:59:59+00:00"),
    "9000001": ("2026-10-25 01:30:00", "2026-10-24T23:30:00+00:00"),
    "9000002": ("2026-10-25 02:00:00", "2026-10-25T01:00:00+00:00"),  # repeated hour: PostgreSQL
    "9000003": ("2026-10-25 02:30:00", "2026-10-25T01:30:00+00:00"),  # takes the later, CET,
    "9000004": ("2026-10-25 02:59:59", "2026-10-25T01:59:59+00:00"),  # instant
    "9000005": ("2026-10-25 03:00:00", "2026-10-25T02:00:00+00:00"),
}
DST_SALES_ORDERS = {"SO9000001": "2026-10-25 02:15:00", "SO9000002": "2026-10-25 01:45:00"}
DST_PURCHASE_ORDERS = {"459000001": "2026-10-25 02:45:00"}


def _scratch_conn_uri(database: str) -> str:
    """The scratch ERP as the test harness made it (the superuser's: no role was granted it)."""
    return f"{os.environ['SFDP_TEST_ADMIN_URI']}/{database}"


@pytest.fixture(scope="module")
def scratch_erp_databases(plant, pg):
    """A copy of the plant's ERP with extra rows (DST night, bad rows), and an empty scratch
    warehouse."""
    from plant_sim.loaders import load_system

    erp_dsn = pg.create_database("sql_test_erp")
    warehouse = pg.create_database("sql_test_warehouse")
    load_system(plant.world, "erp", erp_dsn)
    with psycopg.connect(erp_dsn) as conn:
        for number, (local, _utc) in DST_PRODUCTION_ORDERS.items():
            conn.execute("insert into erp.production_orders values "
                         "(%s, 'ERF', '100046', 'ERF-L1', 100, 'PCS', '2026-10-27', %s, null)",
                         (number, local))
        for number, local in DST_SALES_ORDERS.items():
            conn.execute("insert into erp.sales_orders values "
                         "(%s, 'C10001', '100046', 100, 'PCS', '2026-10-30', %s)", (number, local))
        for number, local in DST_PURCHASE_ORDERS.items():
            conn.execute("insert into erp.purchase_orders values "
                         "(%s, 'ERF', 'V', '200011', 10, 'kg', %s, '2026-10-28')", (number, local))
        conn.execute(  # bad rows: a null mandatory field, a negative quantity
            "insert into erp.production_orders values "
            "('9100001', 'ERF', null, 'ERF-L1', 100, 'PCS', '2026-10-29', '2026-10-27 05:30', null),"
            "('9100002', 'ERF', '100046', 'ERF-L1', -5, 'PCS', '2026-10-29', '2026-10-27 05:40', null),"
            "('9100003', 'ERF', '100046', null, 100, 'PCS', '2026-10-30', '2026-10-28 14:10', null)")
    yield erp_dsn, warehouse
    close_idle_connections()  # the scratch databases are dropped after the session


@pytest.fixture
def scratch_erp(scratch_erp_databases, monkeypatch):
    """`erp_db` points at the scratch ERP for one test."""
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DB", _scratch_conn_uri("sql_test_erp"))
    return scratch_erp_databases


def _window_keys(entity_name: str, start: datetime, end: datetime) -> list[str]:
    """The keys the SQL client reads for exactly `[start, end)` (no lookback)."""
    from factory_platform.extract.clients import Window
    from factory_platform.extract.sql import resolve_endpoint, stream_records

    source = erp_source()
    entity = source.entity(entity_name)
    endpoint = resolve_endpoint(source.conn_id)
    window = Window(start, end, start, end)
    return sorted(r.record_ref for r in stream_records(endpoint, entity, window))


def test_dst_night_places_every_local_time_in_exactly_one_interval(scratch_erp):
    night = hourly(datetime(2026, 10, 24, 21, tzinfo=UTC), datetime(2026, 10, 25, 4, tzinfo=UTC))
    for table, keys in (("production_orders", DST_PRODUCTION_ORDERS),
                        ("sales_orders", DST_SALES_ORDERS),
                        ("purchase_orders", DST_PURCHASE_ORDERS)):
        per_hour = {start: _window_keys(table, start, end) for start, end in night}
        seen = [k for ks in per_hour.values() for k in ks]
        assert len(seen) == len(set(seen)), f"{table}: a row in two intervals: {per_hour}"
        assert set(keys) <= set(seen), table
        # the first pass of the repeated hour (00:00-01:00 UTC) owns no local time
        assert per_hour[datetime(2026, 10, 25, 0, tzinfo=UTC)] == [], table
    owner = {k: s for s, ks in ((s, _window_keys("production_orders", s, e)) for s, e in night)
             for k in ks}
    for number, (_local, utc) in DST_PRODUCTION_ORDERS.items():
        instant = datetime.fromisoformat(utc)
        assert owner[number] == instant.replace(minute=0, second=0), number


def test_dst_interval_loads_each_erp_row_once(scratch_erp):
    from factory_platform.extract.run import extract_interval

    _erp, warehouse = scratch_erp
    reset_system(warehouse, "erp")
    start, end = datetime(2026, 10, 25, 0, tzinfo=UTC), datetime(2026, 10, 25, 2, tzinfo=UTC)
    tables = ["production_orders", "sales_orders", "purchase_orders"]
    for table in tables:
        extract_interval("erp", table, start, end, dsn=warehouse)
    # and the hourly runs of the night over it, twice
    extract_intervals("erp", hourly(start - timedelta(hours=2), end + timedelta(hours=2)) * 2,
                      warehouse, entities=tables)
    with psycopg.connect(warehouse) as conn:
        for table in tables:
            key = erp_source().entity(table).natural_key[0]
            repeated = conn.execute(f'select "{key}", count(*) from raw_erp.{table} '
                                    f'group by 1 having count(*) > 1').fetchall()
            assert repeated == [], table
        loaded = dict(conn.execute("select order_number, released_at_utc from "
                                   "raw_erp.production_orders where order_number like '900000%'"))
    assert loaded == {n: datetime.fromisoformat(u) for n, (_l, u) in DST_PRODUCTION_ORDERS.items()}


def test_bad_rows_are_quarantined_with_their_reason(scratch_erp, plant):
    from factory_platform.extract.run import extract_interval

    _erp, warehouse = scratch_erp
    reset_system(warehouse, "erp")
    summary = extract_interval("erp", "production_orders", plant.start, plant.end, dsn=warehouse)
    assert summary["rows_quarantined"] == 3
    assert summary["rows_read"] == summary["rows_loaded"] + 3 + summary["duplicates_skipped"]
    with psycopg.connect(warehouse) as conn:
        reasons = dict(conn.execute("select record_ref, reason from ops.quarantine "
                                    "where system = 'erp' and entity = 'production_orders'"))
        loaded = {r[0] for r in conn.execute("select order_number from raw_erp.production_orders")}
    assert reasons == {
        "9100001": "required field 'material_number' is missing or null",
        "9100002": "field 'planned_qty': -5 is below its minimum 0",
        "9100003": "required field 'line_code' is missing or null",
    }
    assert not loaded & set(reasons) and len(loaded) == summary["rows_loaded"]
    assert audit_problems(warehouse, "erp") == []


def test_a_batch_of_mostly_bad_rows_fails_naming_table_and_reason(scratch_erp):
    from factory_platform.extract.load import LoadRejected
    from factory_platform.extract.run import extract_interval

    _erp, warehouse = scratch_erp
    start = datetime(2026, 10, 28, 13, tzinfo=UTC)  # 14:10 local: only the bad order 9100003
    with pytest.raises(LoadRejected, match=r"erp\.production_orders .*1 of 1 .*line_code"):
        extract_interval("erp", "production_orders", start, start + timedelta(hours=1),
                         dsn=warehouse)


def test_inbound_postings_are_read_back(scratch_erp):
    from factory_platform.extract.run import extract_interval

    erp_dsn, warehouse = scratch_erp
    reset_system(warehouse, "erp")
    with psycopg.connect(erp_dsn, autocommit=True) as conn:
        answers = [conn.execute("select status from erp.post_message(%s, %s, %s::jsonb)",
                                (key, kind, payload)).fetchone()[0]
                   for key, kind, payload in [
                       ("pc-1", "production_confirmation",
                        '{"order_number": "1000001", "material_number": "100046", "yield_qty": 10}'),
                       ("pc-1", "production_confirmation",
                        '{"order_number": "1000001", "material_number": "100046", "yield_qty": 10}'),
                       ("gm-1", "goods_movement",
                        '{"material_number": "200011", "movement_type": "goods_issue", "qty": -1}'),
                   ]]
        source = conn.execute("select posting_id, idempotency_key, status, erp_document_number, "
                              "payload, received_at from erp.inbound_postings order by 1").fetchall()
    assert answers == ["accepted", "duplicate", "rejected"] and len(source) == 2
    now = source[-1][-1]
    extract_interval("erp", "inbound_postings", now - timedelta(hours=1), now + timedelta(hours=1),
                     dsn=warehouse)
    with psycopg.connect(warehouse) as conn:
        raw = conn.execute("select posting_id, idempotency_key, status, erp_document_number, "
                           "payload, received_at from raw_erp.inbound_postings order by 1").fetchall()
    assert raw == source


@pytest.mark.slow
def test_extract_erp_dag_runs_an_interval_without_changing_raw(erp_loaded, warehouse_dsn,
                                                                project_root):
    """Through Airflow: the last interval of the world again, as a manual reload run."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(project_root / "dags" / "extract_sources.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("extract_erp")
    for task in dag.tasks:
        task.retries = 0
    before = raw_contents(warehouse_dsn, "erp")
    start, end = erp_loaded.intervals[-1]
    dag_run = dag.test(logical_date=end + timedelta(days=1),
                       run_conf={"reload_start": start.isoformat(), "reload_end": end.isoformat()})
    assert str(dag_run.state) == "success"
    assert first_differences(before, raw_contents(warehouse_dsn, "erp")) == {}


def test_plants_in_two_zones_each_use_their_own(scratch_erp):
    """A second plant in Asia/Shanghai: its local times are placed in its zone; sales orders
    (no plant column) need the ERP's default zone, named on the connection."""
    from factory_platform.extract.run import extract_interval
    from factory_platform.extract.sql import SourceConfigError

    erp_dsn, warehouse = scratch_erp
    reset_system(warehouse, "erp")
    start = datetime(2026, 10, 25, 1, tzinfo=UTC)
    with psycopg.connect(erp_dsn) as conn:
        conn.execute("insert into erp.plants values ('SHA', 'Shanghai', '上海工厂', 'Asia/Shanghai')")
        conn.execute("insert into erp.production_orders values ('9200001', 'SHA', '100046', "
                     "'SHA-L1', 50, 'PCS', '2026-10-27', '2026-10-25 09:30:00', null)")
    try:
        assert _window_keys("production_orders", start, start + timedelta(hours=1)) == [
            "9000002", "9000003", "9000004", "9200001"]
        with pytest.raises(SourceConfigError, match="extra.timezone"):
            extract_interval("erp", "sales_orders", start, start + timedelta(hours=1),
                             dsn=warehouse)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIRFLOW_CONN_ERP_DB",
                         _scratch_conn_uri("sql_test_erp") + "?timezone=Europe%2FBerlin")
            assert _window_keys("sales_orders", start, start + timedelta(hours=1)) == ["SO9000001"]
        extract_interval("erp", "production_orders", start, start + timedelta(hours=1),
                         dsn=warehouse)
        released = scalar(warehouse, "select released_at_utc from raw_erp.production_orders "
                          "where order_number = '9200001'")
        assert released == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    finally:
        with psycopg.connect(erp_dsn) as conn:
            conn.execute("delete from erp.production_orders where order_number = '9200001'")
            conn.execute("delete from erp.plants where plant_code = 'SHA'")


def test_window_query_is_an_index_range_not_a_scan(scratch_erp):
    """With an index on the local time column the planner reads only the window's range."""
    from factory_platform.extract.clients import Window
    from factory_platform.extract.sql import build_query, resolve_endpoint
    from psycopg import sql

    erp_dsn, _warehouse = scratch_erp
    with psycopg.connect(erp_dsn, autocommit=True) as conn:
        conn.execute("create index if not exists production_orders_released_at "
                     "on erp.production_orders (released_at)")
    start = datetime(2026, 10, 25, 1, tzinfo=UTC)
    window = Window(start - timedelta(hours=3), start + timedelta(hours=1), start,
                    start + timedelta(hours=1))
    with psycopg.connect(erp_dsn) as conn:
        conn.execute("set enable_seqscan = off")  # a tiny table: make the planner show its choice
        query = build_query(conn, resolve_endpoint("erp_db"),
                            erp_source().entity("production_orders"), window)
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL("explain ") + query.statement,
                                                     query.params))
    assert "production_orders_released_at" in plan and "Seq Scan" not in plan, plan
    # [22:00Z, 02:00Z) is local [00:00 CEST, 03:00 CET): the index range is that, widened by the
    # zone's other offset (an hour each side); the exact UTC test filters the few rows inside
    assert ("released_at >= '2026-10-24 23:00:00'::timestamp without time zone) AND "
            "(released_at < '2026-10-25 04:00:00'") in plan, plan
