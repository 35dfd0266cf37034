"""Truth invariants of a generated world, checked through the MES records and truth CSVs."""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from pathlib import Path

import pytest
from _feed import latest
from plant_sim.timeutil import parse_iso_utc


def _truth(world: Path, table: str) -> list[dict[str, str]]:
    with open(world / "truth" / f"{table}.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def quarantined(world: Path, entity: str) -> set[str]:
    """Record ids the truth says a correct platform quarantines."""
    return {
        r["record_id"]
        for r in _truth(world, "injected_defects")
        if r["entity"] == entity and r["action"] == "quarantine"
    }


def test_counts_add_up_per_operation(small_world: Path) -> None:
    """good + scrap + rework over an operation's confirmations = its total (planned when done)."""
    bad = quarantined(small_world, "confirmations")
    assert bad, "the small config injects quarantine defects"
    ops = {o["operation_id"]: o for o in latest(small_world, "operations")}
    produced: dict[str, int] = defaultdict(int)
    damaged_ops = set()
    for c in latest(small_world, "confirmations"):
        if c["confirmation_id"] in bad:
            damaged_ops.add(c["operation_id"])
            continue
        assert c["good_qty"] >= 0 and c["scrap_qty"] >= 0 and c["rework_qty"] >= 0
        produced[c["operation_id"]] += c["good_qty"] + c["scrap_qty"] + c["rework_qty"]
    completed = [
        o
        for o in ops.values()
        if o["status"] == "completed" and o["operation_id"] not in damaged_ops
    ]
    assert len(completed) >= 10
    for o in completed:
        assert produced[o["operation_id"]] == o["planned_qty"], o["operation_id"]
    for o in ops.values():
        assert produced[o["operation_id"]] <= o["planned_qty"]


def test_truth_pq_is_good_scrap_rework(small_world: Path) -> None:
    rows = _truth(small_world, "oee_machine_shift")
    assert len(rows) == 4 * 3 * 3  # 4 machines x 3 shifts x 3 days
    assert sum(int(r["pq"]) for r in rows) > 1000
    for r in rows:
        assert int(r["pq"]) == int(r["gq"]) + int(r["sq"]) + int(r["rq"])


def test_oee_is_product_of_factors(small_world: Path) -> None:
    rows = _truth(small_world, "oee_machine_shift")
    full = [
        r
        for r in rows
        if r["availability"] and r["effectiveness"] and r["quality_ratio"]
    ]
    assert len(full) >= len(rows) // 2
    for r in full:
        a, e, q = (
            float(r["availability"]),
            float(r["effectiveness"]),
            float(r["quality_ratio"]),
        )
        assert 0 < a <= 1 and 0 < e <= 1 and 0 < q <= 1
        assert float(r["oee"]) == pytest.approx(a * e * q, rel=1e-12)
        assert a == pytest.approx(int(r["apt_seconds"]) / int(r["pbt_seconds"]))
        assert e == pytest.approx(float(r["pri_seconds"]) / int(r["apt_seconds"]))
        assert q == pytest.approx(int(r["gq"]) / int(r["pq"]))
    for r in rows:
        if r not in full:
            assert float(r["oee"]) == 0.0


def test_truth_matches_mes_records(small_world: Path) -> None:
    """APT and PQ per machine × shift recomputed from the served MES records equal the truth."""
    apt: dict[tuple[str, str, str], int] = defaultdict(int)
    for s in latest(small_world, "machine-states".replace("-", "_")):
        if s["state"] == "running":
            key = (s["machine_code"], s["production_date"], s["shift_code"])
            apt[key] += parse_iso_utc(s["end_at"]) - parse_iso_utc(s["start_at"])
    pq: dict[tuple[str, str, str], int] = defaultdict(int)
    bad = quarantined(small_world, "confirmations")
    for c in latest(small_world, "confirmations"):
        if c["confirmation_id"] in bad:
            continue
        key = (c["machine_code"], c["production_date"], c["shift_code"])
        pq[key] += c["good_qty"] + c["scrap_qty"] + c["rework_qty"]
    for r in _truth(small_world, "oee_machine_shift"):
        key = (r["machine_code"], r["production_date"], r["shift_code"])
        assert int(r["apt_seconds"]) == apt.get(key, 0)
        assert int(r["pq"]) == pq.get(key, 0)
    line_day: dict[tuple[str, str], int] = defaultdict(int)
    for c in latest(small_world, "confirmations"):
        if c["confirmation_id"] in bad:
            continue
        line_day[(c["line_code"], c["production_date"])] += c["good_qty"]
    for r in _truth(small_world, "production_line_day"):
        assert int(r["good_qty"]) == line_day.get(
            (r["line_code"], r["production_date"]), 0
        )


def test_states_tile_each_machine_calendar(small_world: Path) -> None:
    cal = _truth(small_world, "shift_calendar")
    shifts = {
        (r["production_date"], r["shift_code"]): (
            parse_iso_utc(r["shift_start_at"]),
            parse_iso_utc(r["shift_end_at"]),
        )
        for r in cal
    }
    first = min(s for s, _ in shifts.values())
    last = max(e for _, e in shifts.values())
    by_machine: dict[str, list[tuple[int, int, str, str]]] = defaultdict(list)
    for s in latest(small_world, "machine_states"):
        by_machine[s["machine_code"]].append(
            (
                parse_iso_utc(s["start_at"]),
                parse_iso_utc(s["end_at"]),
                s["production_date"],
                s["shift_code"],
            )
        )
    assert len(by_machine) == 4
    for machine, ivs in by_machine.items():
        ivs.sort()
        assert ivs[0][0] == first, machine
        assert ivs[-1][1] == last, machine
        for (_s1, e1, *_), (s2, _e2, *_) in itertools.pairwise(ivs):
            assert e1 == s2, f"{machine}: gap or overlap at {e1} / {s2}"
        for s, e, day, code in ivs:
            ss, se = shifts[(day, code)]
            assert ss <= s < e <= se
    total = sum(e - s for ivs in by_machine.values() for s, e, *_ in ivs)
    assert total == 4 * (last - first)


def test_dst_shift_lasts_nine_hours(small_world: Path) -> None:
    cal = {
        (r["production_date"], r["shift_code"]): int(r["shift_seconds"])
        for r in _truth(small_world, "shift_calendar")
    }
    assert cal[("2026-10-24", "S3")] == 9 * 3600
    assert cal[("2026-10-25", "S1")] == 8 * 3600
    assert sum(cal.values()) == 3 * 24 * 3600 + 3600


def test_confirmations_stay_inside_one_shift(small_world: Path) -> None:
    cal = {
        (r["production_date"], r["shift_code"]): (
            parse_iso_utc(r["shift_start_at"]),
            parse_iso_utc(r["shift_end_at"]),
        )
        for r in _truth(small_world, "shift_calendar")
    }
    confs = latest(small_world, "confirmations")
    assert len(confs) > 20
    for c in confs:
        s, e = parse_iso_utc(c["start_at"]), parse_iso_utc(c["end_at"])
        ss, se = cal[(c["production_date"], c["shift_code"])]
        assert ss <= s < e <= se
        assert parse_iso_utc(c["updated_at"]) >= e
        assert c["start_at"].endswith("Z") and c["end_at"].endswith("Z")


def test_item_codes_differ_from_erp_numbers(small_world: Path) -> None:
    wos = latest(small_world, "work_orders")
    assert wos and all(w["item_code"].startswith("ITM-") for w in wos)
    assert all(w["erp_order_number"].isdigit() for w in wos)


def test_machine_day_is_sum_of_its_shifts(small_world: Path) -> None:
    shifts = _truth(small_world, "oee_machine_shift")
    days = _truth(small_world, "oee_machine_day")
    assert len(days) == 4 * 3
    for d in days:
        mine = [
            s
            for s in shifts
            if (s["machine_code"], s["production_date"])
            == (d["machine_code"], d["production_date"])
        ]
        assert len(mine) == 3
        for col in ("pbt_seconds", "apt_seconds", "pq", "gq", "sq", "rq"):
            assert int(d[col]) == sum(int(s[col]) for s in mine), col
        assert float(d["pri_seconds"]) == pytest.approx(
            sum(float(s["pri_seconds"]) for s in mine)
        )
        a, e, q = (
            float(d[k]) for k in ("availability", "effectiveness", "quality_ratio")
        )
        assert float(d["oee"]) == pytest.approx(a * e * q, rel=1e-12)
        assert a == pytest.approx(int(d["apt_seconds"]) / int(d["pbt_seconds"]))
