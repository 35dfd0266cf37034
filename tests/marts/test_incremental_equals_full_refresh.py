"""A full refresh and an incremental build in three chunks give identical tables — every table
the models build (staging, conformed, marts, publish), incremental or rebuilt whole over
incremental inputs."""

from __future__ import annotations

import psycopg
import pytest
from _pipeline import build_in_three_chunks, build_whole_plant, day_windows

pytestmark = pytest.mark.slow

# It reports how long ago each system last loaded (now() − last load): a wall-clock figure
WALL_CLOCK_TABLES = {"marts.mart_source_health"}


def model_tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [f"{schema}.{name}" for schema, name in conn.execute("""
            select table_schema, table_name from information_schema.tables
            where table_schema in ('staging', 'conformed', 'marts', 'publish')
              and table_type = 'BASE TABLE' and table_name not like 'snap\\_%'
            order by 1, 2""")]


def snapshot(dsn: str) -> dict[str, list[tuple]]:
    """Every row of every table the models build, as sorted text."""
    with psycopg.connect(dsn) as conn:
        return {table: conn.execute(f"select t::text from {table} as t order by 1").fetchall()
                for table in model_tables(dsn) if table not in WALL_CLOCK_TABLES}


def test_every_model_table_equals_after_three_incremental_chunks(plant, warehouse_dsn):
    """From an empty state (a full refresh over an empty interval), three incremental builds
    of every model over consecutive thirds of the extracted range (30 days before the first
    shift to 2 days after the last) give exactly the full refresh's rows in every table."""
    build_whole_plant(plant, warehouse_dsn)
    full, emptied = build_in_three_chunks(warehouse_dsn, ["path:models"], day_windows(plant),
                                          snapshot)
    incremental = {"conformed.fct_operation_confirmation", "conformed.fct_machine_state_interval",
                   "conformed.fct_inspection_result", "conformed.fct_quality_defect",
                   "conformed.fct_energy_reading",
                   "conformed.fct_tag_reading_hour", "marts.mart_oee_shift",
                   "marts.mart_production_line_day", "marts.mart_quality"}
    assert incremental <= set(full)
    assert all(full[table] for table in incremental)
    assert not any(emptied[table] for table in incremental)
    for mart in ("mart_inventory_accuracy", "mart_genealogy", "mart_order_fulfilment",
                 "mart_production_vs_plan", "mart_maintenance_reliability",
                 "mart_energy_intensity"):
        assert full[f"marts.{mart}"], mart
    assert len(full) >= 35  # 39 tables today
