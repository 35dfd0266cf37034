"""Cross-system consistency of the small world: SCADA ↔ MES, WMS ↔ MES, EAM ↔ MES, QMS, PLM,
inventory and genealogy truth."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest
from _feed import latest
from _files import drops, read_csv
from plant_sim.timeutil import iso, parse_iso_utc


def _truth(world: Path, table: str) -> list[dict[str, str]]:
    with open(world / "truth" / f"{table}.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _quarantined(world: Path, entity: str) -> set[str]:
    return {
        r["record_id"]
        for r in _truth(world, "injected_defects")
        if r["entity"] == entity and r["action"] == "quarantine"
    }


def test_scada_counter_deltas_equal_mes_counts(small_world: Path) -> None:
    counter: dict[tuple[str, str], int] = {}
    rows = 0
    for path in drops(small_world, "scada", "SCADA_TAGS_"):
        for r in read_csv(path):
            rows += 1
            if r["tag"] == "counter":
                counter[(r["machine_code"], r["ts"])] = int(r["value"])
    assert rows > 4 * 5 * 60 * 24 * 3 * 0.95
    bad = _quarantined(small_world, "confirmations")
    mes: dict[tuple[str, str, str], int] = defaultdict(int)
    damaged: set[tuple[str, str, str]] = set()
    op_machine = {
        o["operation_id"]: o["machine_code"] for o in latest(small_world, "operations")
    }
    for c in latest(small_world, "confirmations"):
        key = (op_machine[c["operation_id"]], c["production_date"], c["shift_code"])
        if c["confirmation_id"] in bad:
            damaged.add(key)
            continue
        mes[key] += c["good_qty"] + c["scrap_qty"] + c["rework_qty"]
    checked = 0
    for t in _truth(small_world, "oee_machine_shift"):
        key = (t["machine_code"], t["production_date"], t["shift_code"])
        start = iso(parse_iso_utc(t["shift_start_at"]))
        end = iso(parse_iso_utc(t["shift_end_at"]))
        if (t["machine_code"], end) not in counter or key in damaged:
            continue
        delta = counter[(t["machine_code"], end)] - counter[(t["machine_code"], start)]
        assert delta == mes.get(key, 0), key
        checked += 1
    assert checked >= 4 * 3 * 3 - 4 - len(damaged)


def test_wms_issues_equal_mes_consumption(small_world: Path) -> None:
    """Per consumed lot, WMS ISSUE quantity = MES consumption (MES units repaired, before defects)."""
    wms: dict[str, float] = defaultdict(float)
    legacy = 0
    for path in drops(small_world, "wms", "WMS_MOVEMENTS_"):
        if path.stem.endswith("_RESEND"):
            continue
        for r in read_csv(path, "gb18030"):
            if r["movement_type"] == "ISSUE":
                wms[r["lot"]] += float(r["qty"])
            legacy += r["material"].startswith("L-")
    mes: dict[str, float] = defaultdict(float)
    for k in latest(small_world, "material_consumptions"):
        mes[k["lot_id"]] += k["qty"] / 1000 if k["unit"] == "g" else k["qty"]
    assert len(mes) >= 5
    assert set(wms) == set(mes)
    for lot, qty in mes.items():
        assert wms[lot] == pytest.approx(qty, abs=1e-6), lot
    assert legacy == sum(
        1
        for d in _truth(small_world, "injected_defects")
        if d["kind"] == "wms_xref_code"
    )


def test_wms_is_gb18030_with_chinese(small_world: Path) -> None:
    path = drops(small_world, "wms", "WMS_CYCLECOUNT_")[0]
    raw = path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("gb18030")
    assert "铝铸件毛坯" in text and "\r\n" in text


def test_eam_failures_match_mes_unplanned_downtime(small_world: Path) -> None:
    with open(small_world / "eam" / "equipment.csv", encoding="utf-8") as fh:
        eq = {r["equipment_id"]: r for r in csv.DictReader(fh)}
    with open(small_world / "eam" / "failures.csv", encoding="utf-8") as fh:
        failures = {
            (
                eq[r["equipment_id"]]["equipment_code"],
                r["started_at"],
                r["ended_at"],
                r["failure_code"],
            )
            for r in csv.DictReader(fh)
        }
    mes = {
        (s["machine_code"], s["start_at"], s["end_at"], s["reason_code"])
        for s in latest(small_world, "machine_states")
        if s["state"] == "unplanned_downtime"
    }
    assert len(mes) >= 3
    assert failures == mes
    levels = defaultdict(int)
    for r in eq.values():
        levels[r["hierarchy_level"]] += 1
    assert dict(levels) == {
        "enterprise": 1,
        "site": 1,
        "area": 1,
        "line": 2,
        "machine": 4,
    }
    rel = {r["machine_code"]: r for r in _truth(small_world, "reliability_machine")}
    per_machine = defaultdict(int)
    for m, *_ in mes:
        per_machine[m] += 1
    for m, n in per_machine.items():
        assert int(rel[m]["failure_count"]) == n
        assert float(rel[m]["mtbf_seconds"]) == pytest.approx(
            int(rel[m]["running_seconds"]) / n
        )


def test_energy_follows_states_and_truth(small_world: Path) -> None:
    bad_files = {
        d["file_name"]
        for d in _truth(small_world, "injected_defects")
        if d["kind"] == "ems_malformed_file"
    }
    assert bad_files
    kwh: dict[str, float] = defaultdict(float)
    for path in drops(small_world, "ems", "EMS_READINGS_"):
        text = path.read_text(encoding="utf-8")
        rows = [line.split(";") for line in text.splitlines()]
        if path.name in bad_files:
            assert len(rows[-1]) != 5 or not text.endswith("\n")
            continue
        assert all(len(r) == 5 for r in rows)
        for meter, machine, start, _end, value in rows[1:]:
            assert meter == f"EM-{machine}" and start[-6] in "+-"
            kwh[machine] += float(value)
    truth = defaultdict(float)
    for r in _truth(small_world, "energy_machine_day"):
        truth[r["machine_code"]] += float(r["energy_kwh"])
        if r["kwh_per_good_unit"]:
            assert float(r["kwh_per_good_unit"]) == pytest.approx(
                float(r["energy_kwh"]) / int(r["good_qty"])
            )
    assert set(truth) == set(kwh)
    for m in truth:
        assert kwh[m] == pytest.approx(truth[m], abs=1e-6)


def test_inventory_truth_matches_cycle_counts(small_world: Path) -> None:
    counts = {}
    for path in drops(small_world, "wms", "WMS_CYCLECOUNT_"):
        for r in read_csv(path, "gb18030"):
            counts[(r["material"], r["count_date"])] = (
                float(r["book_qty"]),
                float(r["counted_qty"]),
            )
    truth = _truth(small_world, "inventory_material_day")
    assert len(truth) == len(counts) >= 6
    assert any(float(t["diff_qty"]) != 0 for t in truth)
    for t in truth:
        book, counted = counts[(t["material_number"], t["balance_date"])]
        assert float(t["book_qty"]) == pytest.approx(book)
        assert float(t["physical_qty"]) == pytest.approx(counted)
        assert float(t["diff_qty"]) == pytest.approx(counted - book)


def test_genealogy_edges_link_received_to_produced_lots(small_world: Path) -> None:
    produced = {p["lot_id"] for p in latest(small_world, "produced_lots")}
    received = set()
    for path in drops(small_world, "wms", "WMS_MOVEMENTS_"):
        for r in read_csv(path, "gb18030"):
            if r["movement_type"] == "RECEIPT":
                received.add(r["lot"])
    edges = _truth(small_world, "genealogy_edges")
    assert len(edges) >= 20
    for e in edges:
        assert e["child_lot_id"] in produced
        assert e["parent_lot_id"] in received


def test_fpy_truth(small_world: Path) -> None:
    prod = {
        (r["line_code"], r["production_date"]): r
        for r in _truth(small_world, "production_line_day")
    }
    for r in _truth(small_world, "fpy_line_day"):
        p = prod[(r["line_code"], r["production_date"])]
        pq = int(p["good_qty"]) + int(p["scrap_qty"]) + int(p["rework_qty"])
        assert int(r["produced_qty"]) == pq
        if pq:
            assert float(r["fpy"]) == pytest.approx(int(p["good_qty"]) / pq)
            assert 0.8 < float(r["fpy"]) < 1


def test_plm_xml(small_world: Path) -> None:
    files = drops(small_world, "plm", "PLM_EXPORT_")
    assert len(files) == 3
    first = ET.parse(files[0]).getroot()
    assert first.get("type") == "full"
    items = first.findall("./Items/Item")
    assert {i.get("number") for i in items} >= {"100045", "200011"}
    names = {n.text for n in first.iter("Name")}
    assert "齿轮箱壳体A45" in names
    boms = first.findall("./BOMs/BOM")
    assert any(c.get("qty") == "1.25" for b in boms for c in b)


def test_wms_movement_files_cover_the_configured_period(small_world: Path, small_config_path: Path,
                                                        tmp_path: Path) -> None:
    """`[wms] movement_file_minutes = 15`, `movement_file_delay_minutes = 0.5`: the same
    movements as the hourly files, cut into quarter-hour files named after their first minute,
    each holding only its quarter's rows and dropped 30 s after the quarter ends."""
    import datetime as dt
    import re

    from plant_sim.config import load_config
    from plant_sim.world import generate_world

    text = small_config_path.read_text(encoding="utf-8")
    config = tmp_path / "quarter.toml"
    config.write_text(f"{text}\n[wms]\nmovement_file_minutes = 15\n"
                      "movement_file_delay_minutes = 0.5\n", encoding="utf-8")
    world = tmp_path / "world"
    generate_world(load_config(config), 7, world)

    def movements(root: Path) -> dict[str, tuple[str, dict]]:
        return {r["movement_id"]: (path.name, r) for path in drops(root, "wms", "WMS_MOVEMENTS_")
                if not path.stem.endswith("_RESEND") for r in read_csv(path, "gb18030")}

    hourly, quarterly = movements(small_world), movements(world)
    assert len(quarterly) > 50
    assert {k: r for k, (_, r) in quarterly.items()} == {k: r for k, (_, r) in hourly.items()}
    index = (world / "drops" / "index.csv").read_text(encoding="utf-8").splitlines()
    available = {row["file_name"]: parse_iso_utc(row["available_at"])
                 for row in csv.DictReader(index)}
    names = {name for name, _ in quarterly.values()}
    assert len(names) > len({name for name, _ in hourly.values()})
    for name in names:
        stamp = re.search(r"_(\d{8}T\d{4})Z", name).group(1)
        start = dt.datetime.strptime(stamp, "%Y%m%dT%H%M").replace(tzinfo=dt.UTC).timestamp()
        assert start % 900 == 0, name
        assert available[name] == start + 900 + 30, name
    # a row's site-local event time falls in its file's quarter (the sites' zones are whole
    # hours off UTC: the minutes agree)
    for name, row in quarterly.values():
        minute = int(re.search(r"_\d{8}T\d{2}(\d{2})Z", name).group(1))
        assert minute <= int(row["event_time"][14:16]) < minute + 15, (name, row)
