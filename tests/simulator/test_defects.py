"""Every configured defect kind is injected, listed exactly in truth.injected_defects, and
observable in the delivered data exactly where the list says."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path

from _feed import latest
from _files import drops, read_csv
from plant_sim.config import load_config
from plant_sim.defects import KINDS
from plant_sim.timeutil import parse_iso_utc


def _defects(world: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    with open(world / "truth" / "injected_defects.csv", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            out[r["kind"]].add(r["record_id"] or r["file_name"])
    return out


def test_each_configured_kind_listed_exactly(
    small_world: Path, small_config_path: Path
) -> None:
    cfg = load_config(small_config_path)
    listed = _defects(small_world)
    manifest = json.loads((small_world / "world.json").read_text())["defects"]
    configured = {k for k, v in cfg.defects.items() if v > 0}
    assert configured == set(KINDS)
    assert set(listed) == configured
    for kind in configured:
        assert len(listed[kind]) == manifest[kind] >= 1, kind
    with open(small_world / "truth" / "injected_defects.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["defect_id"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {r["action"] for r in rows} == {"repair", "quarantine", "flag"}


def test_mes_defects_observable(small_world: Path) -> None:
    d = _defects(small_world)
    conn = sqlite3.connect(small_world / "mes" / "mes.sqlite")
    versions = Counter(r[0] for r in conn.execute("select id from confirmations"))
    first: dict[str, dict] = {}
    for (body,) in conn.execute(
        "select body from confirmations order by updated_at, id"
    ):
        rec = json.loads(body)
        first.setdefault(rec["confirmation_id"], rec)
    conn.close()
    assert {i for i, n in versions.items() if n > 1} == d["mes_duplicate"]
    late = {
        i
        for i, r in first.items()
        if parse_iso_utc(r["updated_at"]) - parse_iso_utc(r["end_at"]) > 1500
    }
    assert late == d["mes_late"]
    assert {i for i, r in first.items() if r["machine_code"] is None} == d[
        "mes_null_mandatory"
    ]
    assert {i for i, r in first.items() if r["scrap_qty"] < 0} == d["mes_negative_qty"]
    states = latest(small_world, "machine_states")
    ooo = {
        s["state_id"]
        for s in states
        if parse_iso_utc(s["updated_at"]) - parse_iso_utc(s["end_at"]) > 1500
    }
    assert ooo == d["mes_out_of_order"]
    cons = latest(small_world, "material_consumptions")
    cfg_items = {"RM-AL-011", "RM-ST-012", "RM-PA-021", "RM-MB-022", "RM-SC-031"}
    assert {k["consumption_id"] for k in cons if k["unit"] == "g"} == d[
        "mes_unit_mismatch"
    ]
    assert {k["consumption_id"] for k in cons if k["item_code"] not in cfg_items} == d[
        "mes_orphan"
    ]


def test_file_defects_observable(small_world: Path) -> None:
    d = _defects(small_world)
    resend = {
        p.name for p in drops(small_world, "wms", "WMS_") if p.stem.endswith("_RESEND")
    }
    assert resend == d["wms_duplicate_file"]
    for name in resend:
        orig = small_world / "drops" / "wms" / name.replace("_RESEND", "")
        assert orig.read_bytes() == (small_world / "drops" / "wms" / name).read_bytes()
    malformed = set()
    for p in drops(small_world, "ems", "EMS_READINGS_"):
        text = p.read_text(encoding="utf-8")
        if not text.endswith("\n") or any(
            len(x.split(";")) != 5 for x in text.splitlines()
        ):
            malformed.add(p.name)
    assert malformed == d["ems_malformed_file"]
    legacy = set()
    for p in drops(small_world, "wms", "WMS_MOVEMENTS_"):
        if not p.stem.endswith("_RESEND"):
            legacy |= {
                r["movement_id"]
                for r in read_csv(p, "gb18030")
                if r["material"].startswith("L-")
            }
    assert legacy == d["wms_xref_code"]


def test_scada_defects_observable(small_world: Path) -> None:
    d = _defects(small_world)
    temp: dict[tuple[str, str], float] = {}
    vib: dict[tuple[str, str], str] = {}
    present: set[tuple[str, str]] = set()
    for p in drops(small_world, "scada", "SCADA_TAGS_"):
        for r in read_csv(p):
            key = (r["machine_code"], r["ts"])
            present.add(key)
            if r["tag"] == "temperature":
                temp[key] = float(r["value"])
            elif r["tag"] == "vibration":
                vib[key] = r["value"]
    spikes = {f"{m}|temperature|{ts}" for (m, ts), v in temp.items() if v > 200}
    assert spikes == d["scada_spike"]
    for ref in d["scada_gap"]:
        m, _tag, ts = ref.split("|")
        t0 = parse_iso_utc(ts)
        from plant_sim.timeutil import iso

        assert all((m, iso(t0 + 60 * k)) not in present for k in range(15))
        assert (m, iso(t0 - 60)) in present and (m, iso(t0 + 900)) in present
    for ref in d["scada_flatline"]:
        m, _tag, ts = ref.split("|")
        t0 = parse_iso_utc(ts)
        from plant_sim.timeutil import iso

        vals = {
            vib[(m, iso(t0 + 60 * k))]
            for k in range(30)
            if (m, iso(t0 + 60 * k)) in vib
        }
        assert len(vals) == 1
