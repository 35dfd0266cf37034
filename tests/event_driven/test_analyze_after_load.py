"""Planner statistics after loads (#15 item 5): a batch leaves the raw tables it changed
analysed, as the loader that runs it in production (which owns the raw tables), by
autovacuum's own threshold: a fresh table at once, a large change at once, a micro-batch
into a large table not (one catalog look instead of a sample of the table)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from factory_platform.extract.load import (
    DelimitedFile,
    Extraction,
    LoadTarget,
    SourceRecord,
    load_batch,
)
from factory_platform.fields import Field

SYSTEM = "analyzetest"
T0 = datetime(2026, 10, 20, tzinfo=UTC)
READINGS = LoadTarget(
    system=SYSTEM, entity="readings",
    fields=(Field("reading_id", required=True), Field("machine_code", required=True),
            Field("read_at", "timestamptz", required=True)),
    natural_key=("reading_id",), replace_column="read_at")
TAGS = LoadTarget(
    system=SYSTEM, entity="tags",
    fields=(Field("tag", required=True), Field("ts", "timestamptz", required=True),
            Field("value", "numeric")),
    natural_key=("tag", "ts"), replace_column=None)


@pytest.fixture()
def loader_dsn(warehouse_dsn):
    """The loader's connection (as extraction tasks use it), a clean scratch system."""
    from factory_platform.warehouse import warehouse_dsn as connection_dsn

    def clean():
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            conn.execute(f"drop schema if exists raw_{SYSTEM} cascade")
            for table in ("quarantine", "schema_drift", "load_audit", "source_incident",
                          "extract_watermark"):
                conn.execute(f"delete from ops.{table} where system = %s", (SYSTEM,))

    clean()
    yield connection_dsn("warehouse_load")
    clean()


def statistics(dsn: str, table: str) -> tuple[float, datetime | None, int]:
    """(reltuples, pg_stat_user_tables.last_analyze, pg_stats rows) of `table`."""
    schema, name = table.split(".")
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select c.reltuples, s.last_analyze, "
            "(select count(*) from pg_stats p where p.schemaname = %s and p.tablename = %s) "
            "from pg_class c left join pg_stat_user_tables s on s.relid = c.oid "
            "where c.oid = %s::regclass", (schema, name, table)).fetchone()


def readings(start: datetime, count: int, prefix: str) -> Extraction:
    return Extraction(records=[SourceRecord("page 1", f"{prefix}{i}", {
        "reading_id": f"{prefix}{i}", "machine_code": f"M{i % 7}",
        "read_at": (start + timedelta(seconds=i)).isoformat()}) for i in range(count)],
        source_label="test api")


def load_hour(dsn: str, hour: int, count: int, prefix: str):
    start = T0 + timedelta(hours=hour)
    return load_batch(dsn, READINGS, readings(start, count, prefix), interval_start=start,
                      interval_end=start + timedelta(hours=1), window_start=start)


def test_a_window_load_leaves_its_table_analysed_by_autovacuums_threshold(loader_dsn):
    load_hour(loader_dsn, 0, 1000, "A")
    tuples, analysed, columns = statistics(loader_dsn, READINGS.table)
    assert (tuples, columns) == (1000, 3 + 6)  # every declared column and the batch columns
    assert analysed is not None

    load_hour(loader_dsn, 1, 10, "B")  # 10 rows into 1,000: under 50 + 10 %
    assert statistics(loader_dsn, READINGS.table)[:2] == (1000, analysed)

    load_hour(loader_dsn, 2, 200, "C")  # 210 rows changed since: over it
    tuples, again, _ = statistics(loader_dsn, READINGS.table)
    assert tuples == 1210 and again > analysed

    load_hour(loader_dsn, 0, 1000, "A")  # a reload of a window: 2,000 rows deleted, inserted
    assert statistics(loader_dsn, READINGS.table)[1] > again


def test_a_historian_load_analyses_the_partition_and_file_table_it_wrote(loader_dsn,
                                                                          tmp_path: Path):
    header = b"tag;ts;value\n"
    lines = [f"T{i % 5};{(T0 + timedelta(minutes=i)).isoformat()};{i / 10}\n".encode()
             for i in range(600)]
    path = tmp_path / "TAGS_20261020T00.csv"
    path.write_bytes(header + b"".join(lines))
    file = DelimitedFile(name=path.name, path=str(path), columns=("tag", "ts", "value"),
                         data_offset=len(header), records=lambda rejected: [])
    extraction = Extraction(records=[], source_label="test inbox", replace_sources=[path.name],
                            delimited_files=[file])
    result = load_batch(loader_dsn, TAGS, extraction, interval_start=T0,
                        interval_end=T0 + timedelta(hours=1), window_start=T0)
    assert result.rows_loaded == 600
    with psycopg.connect(loader_dsn) as conn:
        (partition,) = conn.execute(
            "select inhrelid::regclass::text from pg_inherits "
            "where inhparent = %s::regclass", (f"{TAGS.table}__rows",)).fetchone()
    tuples, analysed, _ = statistics(loader_dsn, partition)
    assert tuples == 600 and analysed is not None
    tuples, analysed, _ = statistics(loader_dsn, f"{TAGS.table}__files")
    assert tuples == 1 and analysed is not None
    # the partitioned parent: analysed once, on its first load (its ANALYZE reads every
    # partition; later loads keep the partitions' statistics)
    assert statistics(loader_dsn, f"{TAGS.table}__rows")[0] == 600


def test_a_dbt_build_leaves_the_tables_it_made_analysed(pg, tmp_path):
    """Every table dbt builds (seeds, tables; the project's post-hook analyze_built_table) is
    analysed by the build itself: these three hold 2, 3 and ~2,000 rows, under autovacuum's
    threshold of 50 rows + 10 % for the first two, so nothing else would ever analyse them."""
    from factory_platform.dbt_project import run_dbt

    dsn = pg.create_database("analyze_dbt")
    try:
        target = str(tmp_path / "dbt")
        for args in (("seed", "--select", "plant_sites", "shift_patterns"),
                     ("run", "--select", "dim_shift")):
            done = run_dbt(dsn, *args, target_path=target)
            assert done.returncode == 0, done.stdout[-3000:]
        for table in ("conformed.plant_sites", "conformed.shift_patterns", "conformed.dim_shift"):
            reltuples, last_analyze, columns_with_stats = statistics(dsn, table)
            with psycopg.connect(dsn) as conn:
                rows = conn.execute(f"select count(*) from {table}").fetchone()[0]
            assert last_analyze is not None and columns_with_stats > 0, table
            assert (reltuples, rows > 0) == (rows, True), table
    finally:
        pg.cluster.drop_database("analyze_dbt")


def test_warehouse_sessions_plan_without_jit(warehouse_dsn):
    """Provisioning sets the warehouse's sessions to jit off (roles.WAREHOUSE_SETTINGS): the
    gate's batches were costed in the millions and spent 1.45 of 1.67 s compiling."""
    from factory_platform.warehouse import warehouse_dsn as connection_dsn

    for dsn in (warehouse_dsn, connection_dsn("warehouse_load")):
        with psycopg.connect(dsn) as conn:
            assert conn.execute("show jit").fetchone()[0] == "off"
