"""Production and quality marts equal the simulator's truth.

The whole 14-day plant is extracted from the MES and QMS APIs into raw_*, `dbt build` runs
through the dbt CLI, and the marts are compared with the `truth` schema (never with SQL of the
models under test): OEE elements exactly and ratios to 1e-9 per machine × shift, the rollups per
machine and day and per line and day, FPY per line and day, and good/scrap/rework per line and
day. (tests/marts/test_incremental_equals_full_refresh.py builds every model incrementally in
three chunks and compares it with the full refresh.)
"""

from __future__ import annotations

import psycopg
import pytest
from _pipeline import (
    build_whole_plant,
    rows,
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
    print(f"\n{name}: {compared} rows compared with the truth, max |ratio diff| {max_abs:.3g}")
    assert differences == [], f"{name}: {len(differences)} differences; first: {differences[:5]}"
    assert compared == len(truth) > 0


OEE_EXACT = {c: c for c in ("site_code", "line_code", "pbt_seconds", "apt_seconds", "pq", "gq",
                             "sq", "rq")}
OEE_RATIOS = {c: c for c in ("pri_seconds", "availability", "effectiveness", "quality_ratio",
                              "oee")}


def test_oee_per_machine_and_shift_equals_truth(built, warehouse_dsn):
    key = ("machine_code", "production_date", "shift_code")
    mart = keyed(warehouse_dsn, "select * from marts.mart_oee_shift", key)
    truth = keyed(warehouse_dsn, "select * from truth.oee_machine_shift", key)
    losses = {c: c for c in ("shift_start_at", "shift_end_at", "setup_seconds", "idle_seconds",
                             "planned_downtime_seconds", "unplanned_downtime_seconds")}
    assert_equal_to_truth("mart_oee_shift", mart, truth, {**OEE_EXACT, **losses}, OEE_RATIOS)
    # the elements are exact, not merely close: PRI too
    assert all(float(mart[k]["pri_seconds"]) == truth[k]["pri_seconds"] for k in truth)
    idle = [k for k, r in truth.items() if r["pq"] == 0]
    assert idle, "the plant should have shifts without production"
    assert all(mart[k]["oee"] == 0 and mart[k]["quality_ratio"] is None for k in idle)


def test_oee_per_machine_and_day_equals_truth(built, warehouse_dsn):
    key = ("machine_code", "production_date")
    mart = keyed(warehouse_dsn, "select * from marts.mart_oee_machine_day", key)
    truth = keyed(warehouse_dsn, "select * from truth.oee_machine_day", key)
    assert_equal_to_truth("mart_oee_machine_day", mart, truth, OEE_EXACT, OEE_RATIOS)


def test_oee_per_line_and_day_equals_the_truths_sums(built, warehouse_dsn):
    """The line-day rollup equals the truth's machine-days summed per line, ratios recomputed
    from those sums (the truth has no line table; its sums are the reference)."""
    key = ("line_code", "production_date")
    mart = keyed(warehouse_dsn, "select * from marts.mart_oee_line_day", key)
    truth = keyed(warehouse_dsn, """
        select site_code, line_code, production_date, sum(pbt_seconds)::bigint as pbt_seconds,
               sum(apt_seconds)::bigint as apt_seconds, sum(pri_seconds) as pri_seconds,
               sum(pq)::bigint as pq, sum(gq)::bigint as gq, sum(sq)::bigint as sq,
               sum(rq)::bigint as rq
        from truth.oee_machine_day group by site_code, line_code, production_date""", key)
    for row in truth.values():
        row["availability"] = row["apt_seconds"] / row["pbt_seconds"] if row["pbt_seconds"] else None
        row["effectiveness"] = row["pri_seconds"] / row["apt_seconds"] if row["apt_seconds"] else None
        row["quality_ratio"] = row["gq"] / row["pq"] if row["pq"] else None
        factors = (row["availability"], row["effectiveness"], row["quality_ratio"])
        row["oee"] = 0.0 if None in factors else factors[0] * factors[1] * factors[2]
    assert_equal_to_truth("mart_oee_line_day", mart, truth, OEE_EXACT, OEE_RATIOS)


def test_losses_by_reason_add_up_to_the_truths_categories(built, warehouse_dsn):
    key = ("machine_code", "production_date", "shift_code")
    seconds = "coalesce(sum(duration_seconds) filter (where iso22400_time_category = '{}'), 0)"
    losses = keyed(warehouse_dsn, f"""
        select machine_code, production_date, shift_code,
               sum(duration_seconds) as total_seconds,
               {seconds.format('running')} as running_seconds,
               {seconds.format('unplanned_downtime')} as unplanned_downtime_seconds,
               {seconds.format('planned_downtime')} as planned_downtime_seconds
        from marts.mart_oee_loss_shift group by 1, 2, 3""", key)
    truth = keyed(warehouse_dsn, """
        select t.*, c.shift_seconds from truth.oee_machine_shift t
        join truth.shift_calendar c using (site_code, production_date, shift_code)""", key)
    exact = {"total_seconds": "shift_seconds", "running_seconds": "apt_seconds",
             "unplanned_downtime_seconds": "unplanned_downtime_seconds",
             "planned_downtime_seconds": "planned_downtime_seconds"}
    assert_equal_to_truth("mart_oee_loss_shift", losses, truth, exact, {})
    by_reason = rows(warehouse_dsn, """
        select count(*) from marts.mart_oee_shift where unplanned_downtime_seconds
            <> mechanical_failure_seconds + electrical_failure_seconds + tool_breakage_seconds
               + material_jam_seconds + other_unplanned_downtime_seconds
            or planned_downtime_seconds <> break_seconds + preventive_maintenance_seconds""")
    assert by_reason == [(0,)]


def test_shift_calendar_equals_truth(built, warehouse_dsn):
    key = ("site_code", "production_date", "shift_code")
    truth = keyed(warehouse_dsn, "select * from truth.shift_calendar", key)
    dim = keyed(warehouse_dsn, f"""
        select * from conformed.dim_shift
        where production_date between '{min(k[1] for k in truth)}' and '{max(k[1] for k in truth)}'
          and site_code in (select site_code from truth.shift_calendar)""", key)
    exact = {c: c for c in ("shift_start_at", "shift_end_at", "shift_seconds")}
    assert_equal_to_truth("dim_shift", dim, truth, exact, {})
    assert {r["shift_seconds"] for r in truth.values()} == {28800, 32400}  # the DST night


def test_fpy_per_line_and_day_equals_truth(built, warehouse_dsn):
    key = ("line_code", "production_date")
    mart = keyed(warehouse_dsn, "select * from marts.mart_quality", key)
    truth = keyed(warehouse_dsn, "select * from truth.fpy_line_day", key)
    exact = {"site_code": "site_code", "produced_count": "produced_qty",
             "first_pass_good_count": "first_pass_good_qty"}
    assert_equal_to_truth("mart_quality", mart, truth, exact, {"fpy": "fpy"})
    scrap = keyed(warehouse_dsn, "select * from truth.production_line_day", key)
    for k, row in mart.items():  # scrap/rework ratios from the truth's counts
        assert row["scrap_ratio"] == pytest.approx(scrap[k]["scrap_qty"] / row["produced_count"],
                                                   abs=TOLERANCE)
        assert row["rework_ratio"] == pytest.approx(
            scrap[k]["rework_qty"] / row["produced_count"], abs=TOLERANCE)
        assert row["defect_count"] == scrap[k]["scrap_qty"]  # QMS defects = MES scrap


def test_production_per_line_and_day_equals_truth(built, warehouse_dsn):
    key = ("line_code", "production_date")
    mart = keyed(warehouse_dsn, "select * from marts.mart_production_line_day", key)
    truth = keyed(warehouse_dsn, "select * from truth.production_line_day", key)
    exact = {"site_code": "site_code", "good_count": "good_qty", "scrap_count": "scrap_qty",
             "rework_count": "rework_qty"}
    assert_equal_to_truth("mart_production_line_day", mart, truth, exact, {})


def test_defect_pareto_covers_all_scrap_with_both_languages(built, warehouse_dsn):
    pareto = rows(warehouse_dsn, "select defect_code, defect_text_en, defect_text_zh, pareto_rank, "
                                 "defect_count, cumulative_defect_share from marts.mart_defect_pareto "
                                 "order by pareto_rank")
    (scrap,) = rows(warehouse_dsn, "select sum(scrap_qty) from truth.production_line_day")[0]
    assert sum(r[4] for r in pareto) == scrap
    assert [r[4] for r in pareto] == sorted((r[4] for r in pareto), reverse=True)
    assert pareto[-1][5] == pytest.approx(1.0)
    texts = {r[0]: (r[1], r[2]) for r in pareto}
    assert texts["D01"] == ("Dimension out of tolerance", "尺寸超差")
    assert texts["D04"][1] == "气孔"
