"""The truth: what really happened, written as CSV beside the data and loaded into `truth.*`.

Every table is declared once in `TABLES` (column, Postgres type); the generator writes one CSV
per table under `<world>/truth/`, and `load_truth` (re)creates schema `truth` and COPYs them.
"""

from __future__ import annotations

from pathlib import Path

from plant_sim.tables import Spec, TableWriter, copy_tables, ddl

TABLES: Spec = {
    "world": [
        ("world_name", "text"),
        ("seed", "bigint"),
        ("config_sha256", "text"),
        ("start_date", "date"),
        ("days", "integer"),
    ],
    "shift_calendar": [
        ("site_code", "text"),
        ("production_date", "date"),
        ("shift_code", "text"),
        ("shift_start_at", "timestamptz"),
        ("shift_end_at", "timestamptz"),
        ("shift_seconds", "integer"),
    ],
    "oee_machine_shift": [
        ("site_code", "text"),
        ("line_code", "text"),
        ("machine_code", "text"),
        ("production_date", "date"),
        ("shift_code", "text"),
        ("shift_start_at", "timestamptz"),
        ("shift_end_at", "timestamptz"),
        ("pbt_seconds", "bigint"),
        ("apt_seconds", "bigint"),
        ("pri_seconds", "double precision"),
        ("pq", "bigint"),
        ("gq", "bigint"),
        ("sq", "bigint"),
        ("rq", "bigint"),
        ("setup_seconds", "bigint"),
        ("idle_seconds", "bigint"),
        ("planned_downtime_seconds", "bigint"),
        ("unplanned_downtime_seconds", "bigint"),
        ("availability", "double precision"),
        ("effectiveness", "double precision"),
        ("quality_ratio", "double precision"),
        ("oee", "double precision"),
    ],
    "oee_machine_day": [
        ("site_code", "text"),
        ("line_code", "text"),
        ("machine_code", "text"),
        ("production_date", "date"),
        ("pbt_seconds", "bigint"),
        ("apt_seconds", "bigint"),
        ("pri_seconds", "double precision"),
        ("pq", "bigint"),
        ("gq", "bigint"),
        ("sq", "bigint"),
        ("rq", "bigint"),
        ("availability", "double precision"),
        ("effectiveness", "double precision"),
        ("quality_ratio", "double precision"),
        ("oee", "double precision"),
    ],
    "production_line_day": [
        ("site_code", "text"),
        ("line_code", "text"),
        ("production_date", "date"),
        ("good_qty", "bigint"),
        ("scrap_qty", "bigint"),
        ("rework_qty", "bigint"),
    ],
    "fpy_line_day": [
        ("site_code", "text"),
        ("line_code", "text"),
        ("production_date", "date"),
        ("produced_qty", "bigint"),
        ("first_pass_good_qty", "bigint"),
        ("fpy", "double precision"),
    ],
    "reliability_machine": [
        ("site_code", "text"),
        ("line_code", "text"),
        ("machine_code", "text"),
        ("failure_count", "integer"),
        ("running_seconds", "bigint"),
        ("unplanned_downtime_seconds", "bigint"),
        ("mtbf_seconds", "double precision"),
        ("mttr_seconds", "double precision"),
    ],
    "energy_machine_day": [
        ("site_code", "text"),
        ("line_code", "text"),
        ("machine_code", "text"),
        ("production_date", "date"),
        ("energy_kwh", "double precision"),
        ("good_qty", "bigint"),
        ("kwh_per_good_unit", "double precision"),
    ],
    "inventory_material_day": [
        ("site_code", "text"),
        ("material_number", "text"),
        ("balance_date", "date"),
        ("unit", "text"),
        ("book_qty", "double precision"),
        ("physical_qty", "double precision"),
        ("diff_qty", "double precision"),
    ],
    "genealogy_edges": [
        ("parent_lot_id", "text"),
        ("child_lot_id", "text"),
        ("parent_material_number", "text"),
        ("child_material_number", "text"),
        ("qty", "double precision"),
        ("unit", "text"),
    ],
    "machine_counter_shift": [
        ("site_code", "text"),
        ("line_code", "text"),
        ("machine_code", "text"),
        ("production_date", "date"),
        ("shift_code", "text"),
        ("shift_start_at", "timestamptz"),
        ("shift_end_at", "timestamptz"),
        ("good_count", "bigint"),
        ("scrap_count", "bigint"),
        ("rework_count", "bigint"),
        ("total_count_start", "bigint"),
        ("total_count_end", "bigint"),
    ],
    "plc_counters": [
        ("machine_code", "text"),
        ("counter", "text"),
        ("preset", "bigint"),
        ("rollover_at", "timestamptz"),
    ],
    "injected_defects": [
        ("defect_id", "integer"),
        ("kind", "text"),
        ("system", "text"),
        ("entity", "text"),
        ("record_id", "text"),
        ("file_name", "text"),
        ("action", "text"),
        ("detail", "text"),
    ],
}
"""Truth tables: name → columns. Extended by the other systems (see README "Truth")."""


class TruthWriter(TableWriter):
    """Streams truth rows to `<world>/truth/<table>.csv`."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, TABLES)


def load_truth(world: Path, dsn: str) -> dict[str, int]:
    """Drop and recreate schema `truth` in the database at `dsn`, COPY every truth CSV."""
    import psycopg

    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS truth CASCADE")
            cur.execute("CREATE SCHEMA truth")
            cur.execute(
                "COMMENT ON SCHEMA truth IS 'Ground truth written by the plant simulator "
                "(plant_sim); tests compare marts with it.'"
            )
            for stmt in ddl("truth", TABLES):
                cur.execute(stmt)
            counts = copy_tables(cur, "truth", TABLES, world / "truth")
        conn.commit()
    return counts
