"""A full refresh and an incremental build in three chunks give identical tables — every table
the models build (staging, conformed, marts, publish), incremental or rebuilt whole over
incremental inputs; and a full refresh with the interval vars set is complete, not partial."""

from __future__ import annotations

import psycopg
import pytest
from _pipeline import (
    build_in_three_chunks,
    build_whole_plant,
    changing_the_build,
    day_windows,
    dbt_build_selected,
    incremental_tables,
    interval_vars,
)

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


def snapshot(dsn: str, tables: list[str] | None = None) -> dict[str, list[tuple]]:
    """Every row of every table the models build (or of `tables`), as sorted text."""
    with psycopg.connect(dsn) as conn:
        return {table: conn.execute(f"select t::text from {table} as t order by 1").fetchall()
                for table in (tables or model_tables(dsn)) if table not in WALL_CLOCK_TABLES}


def test_every_model_table_equals_after_three_incremental_chunks(plant, warehouse_dsn):
    """From an empty state (every incremental table truncated), three incremental builds
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


def test_a_full_refresh_with_interval_vars_is_complete(plant, warehouse_dsn):
    """`dbt build --full-refresh` of the incremental models with the interval vars set (a day in
    the middle of production) gives exactly the tables of the full build without vars: the
    interval applies only under is_incremental(), so a full refresh (or a first build) is never
    partial."""
    build_whole_plant(plant, warehouse_dsn)
    tables = incremental_tables(["path:models"])
    assert len(tables) == 13, tables
    full = snapshot(warehouse_dsn, tables)
    assert all(full.values()), [table for table, table_rows in full.items() if not table_rows]
    production_days = day_windows(plant, days_before=0, days_after=0)
    day_start, day_end = production_days[len(production_days) // 2]  # a day with production
    with changing_the_build(warehouse_dsn, restored=True):
        dbt_build_selected(["config.materialized:incremental"], "--full-refresh",
                           "--resource-type", "model", "--vars", interval_vars(day_start, day_end))
        refreshed = snapshot(warehouse_dsn, tables)
        differing = {t: (len(full[t]), len(refreshed[t])) for t in full if full[t] != refreshed[t]}
        assert differing == {}, f"tables differ (without vars, with vars): {differing}"
