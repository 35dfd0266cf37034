"""Maintenance and energy marts equal the simulator's truth.

The whole 14-day plant is extracted from the MES API, the EAM database and the EMS file drops
into raw_*, `dbt build` runs through the dbt CLI, and the marts are compared with the `truth`
schema (never with SQL of the models under test): reliability per machine (failure count,
running and unplanned downtime seconds exactly, MTBF/MTTR to 1e-9), energy intensity per
machine × production date (kWh and kWh per good unit to 1e-9, good pieces exactly), and the
EAM equipment hierarchy in dim_equipment (line, site, Chinese names).
"""

from __future__ import annotations

import psycopg
import pytest
from _pipeline import (
    build_whole_plant,
)

pytestmark = pytest.mark.slow

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def built(plant, warehouse_dsn):
    """The whole plant extracted and built (shared with the other marts modules)."""
    return build_whole_plant(plant, warehouse_dsn)


def keyed(dsn: str, query: str, key: tuple[str, ...]) -> dict[tuple, dict]:
    """Rows of a query as dicts, by their key columns."""
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(query)
        names = [c.name for c in cursor.description]
        records = [dict(zip(names, row)) for row in cursor.fetchall()]
    table = {tuple(r[k] for k in key): r for r in records}
    assert len(table) == len(records), f"duplicate keys in {query!r}"
    return table


def compare(mart: dict, truth: dict, exact: dict[str, str], ratios: dict[str, str]) -> tuple:
    """Full outer comparison by key: `exact` columns must be equal, `ratios` within TOLERANCE
    (NULL only where the truth is NULL). Returns (differences, rows compared, max abs diff)."""
    differences, max_abs = [], 0.0
    for key in sorted(mart.keys() | truth.keys(), key=str):
        ours, theirs = mart.get(key), truth.get(key)
        if ours is None or theirs is None:
            differences.append((key, "only in " + ("truth" if ours is None else "mart")))
            continue
        for column, truth_column in exact.items():
            if ours[column] != theirs[truth_column]:
                differences.append((key, column, ours[column], theirs[truth_column]))
        for column, truth_column in ratios.items():
            a, b = ours[column], theirs[truth_column]
            if a is None or b is None:
                if (a is None) != (b is None):
                    differences.append((key, column, a, b))
                continue
            max_abs = max(max_abs, abs(float(a) - float(b)))
            if abs(float(a) - float(b)) > TOLERANCE:
                differences.append((key, column, a, b))
    return differences, len(mart.keys() & truth.keys()), max_abs


def assert_equal_to_truth(name: str, mart: dict, truth: dict, exact: dict, ratios: dict) -> None:
    differences, compared, max_abs = compare(mart, truth, exact, ratios)
    print(f"\n{name}: {compared} rows compared with the truth, max |diff| {max_abs:.3g}")
    assert differences == [], f"{name}: {len(differences)} differences; first: {differences[:5]}"
    assert compared == len(truth) > 0


def test_reliability_per_machine_equals_truth(built, warehouse_dsn):
    key = ("machine_code",)
    mart = keyed(warehouse_dsn, "select * from marts.mart_maintenance_reliability", key)
    truth = keyed(warehouse_dsn, "select * from truth.reliability_machine", key)
    exact = {"site_code": "site_code", "line_code": "line_code",
             "failure_count": "failure_count", "running_seconds": "running_seconds",
             "unplanned_downtime_seconds": "unplanned_downtime_seconds"}
    ratios = {"mtbf_seconds": "mtbf_seconds", "mttr_seconds": "mttr_seconds"}
    assert_equal_to_truth("mart_maintenance_reliability", mart, truth, exact, ratios)
    assert any(r["failure_count"] > 0 for r in truth.values()), "the plant should have failures"
    for machine, row in truth.items():  # NULL exactly where the truth has no failure
        if row["failure_count"] == 0:
            assert mart[machine]["mtbf_seconds"] is None and mart[machine]["mttr_seconds"] is None


def test_energy_per_machine_and_day_equals_truth(built, warehouse_dsn):
    key = ("machine_code", "production_date")
    mart = keyed(warehouse_dsn, "select * from marts.mart_energy_intensity", key)
    truth = keyed(warehouse_dsn, "select * from truth.energy_machine_day", key)
    exact = {"site_code": "site_code", "line_code": "line_code", "good_count": "good_qty"}
    ratios = {"energy_kwh": "energy_kwh", "kwh_per_good_unit": "kwh_per_good_unit"}
    assert_equal_to_truth("mart_energy_intensity", mart, truth, exact, ratios)
    # the malformed EMS files are quarantined: none of their readings reaches the facts
    with psycopg.connect(warehouse_dsn) as conn:
        malformed = [row[0] for row in conn.execute("""
            select file_name from truth.injected_defects where kind = 'ems_malformed_file'""")]
        loaded = conn.execute("""
            select count(*) from conformed.fct_energy_reading
            where source_file = any(%s)""", (malformed,)).fetchone()[0]
        # the DST day (25 h of shifts) has 100 readings per machine, any other day 96,
        # less 4 per quarantined hourly file
        short_days = conn.execute("""
            select count(*) from marts.mart_energy_intensity
            where reading_count < 96""").fetchone()[0]
    print(f"malformed EMS files (their kWh excluded): {malformed}")
    assert malformed, "the plant should have malformed EMS files"
    assert loaded == 0
    assert short_days > 0


def test_energy_per_line_and_day_equals_the_truths_sums(built, warehouse_dsn):
    key = ("line_code", "production_date")
    mart = keyed(warehouse_dsn, "select * from marts.mart_energy_intensity_line_day", key)
    truth = keyed(warehouse_dsn, """
        select site_code, line_code, production_date, sum(energy_kwh) as energy_kwh,
               sum(good_qty)::bigint as good_qty
        from truth.energy_machine_day group by site_code, line_code, production_date""", key)
    for row in truth.values():
        row["kwh_per_good_unit"] = row["energy_kwh"] / row["good_qty"] if row["good_qty"] else None
    exact = {"site_code": "site_code", "good_count": "good_qty"}
    ratios = {"energy_kwh": "energy_kwh", "kwh_per_good_unit": "kwh_per_good_unit"}
    assert_equal_to_truth("mart_energy_intensity_line_day", mart, truth, exact, ratios)


def test_dim_equipment_has_every_eam_machine_with_line_site_and_chinese_names(
        built, warehouse_dsn):
    key = ("equipment_code",)
    dim = keyed(warehouse_dsn, "select * from conformed.dim_equipment", key)
    with psycopg.connect(warehouse_dsn) as conn:
        machines = conn.execute("""
            select distinct site_code, line_code, machine_code
            from truth.reliability_machine""").fetchall()
    assert machines
    for site_code, line_code, machine_code in machines:
        row = dim[(machine_code,)]
        assert row["hierarchy_level"] == "machine"
        assert (row["site_code"], row["line_code"]) == (site_code, line_code)
        assert row["machine_code"] == machine_code
        assert row["equipment_path"].endswith(f"{line_code}/{machine_code}")
    zh_names = [r["name_zh"] for r in dim.values() if r["name_zh"]]
    assert zh_names and all(any("\u4e00" <= ch <= "\u9fff" for ch in n) for n in zh_names)
    assert {r["hierarchy_level"] for r in dim.values()} >= {"site", "area", "line", "machine"}
