"""QMS API, file drops into the inbox (batch and live clock)."""

from __future__ import annotations

import shutil
from pathlib import Path

from _http import call, fetch_all
from plant_sim.drops import read_index
from plant_sim.runtime import Runtime
from plant_sim.systems.qms import ENTITIES as QMS
from plant_sim.timeutil import iso


def test_qms_api(mes_runtime, small_world: Path) -> None:
    base = mes_runtime.qms_url
    data = {e: fetch_all(base, e, limit=211) for e in QMS}
    lots = {r["lot_id"] for r in fetch_all(mes_runtime.mes_url, "produced-lots")}
    assert {r["lot_id"] for r in data["inspection-lots"]} == lots
    assert len(data["inspection-results"]) == len(lots) * 3 * 5
    chars = {c["characteristic_id"]: c for c in data["characteristics"]}
    for r in data["inspection-results"]:
        c = chars[r["characteristic_id"]]
        assert r["in_spec"] == (
            c["lower_spec_limit"] <= r["value"] <= c["upper_spec_limit"]
        )
        assert r["updated_at"].endswith("Z") and len(r["measured_at"]) == 19
        assert "T" not in r["measured_at"]
    assert len(data["usage-decisions"]) == len(lots)
    assert {d["decision"] for d in data["usage-decisions"]} <= {
        "ACCEPT",
        "ACCEPT_WITH_DEVIATION",
        "REJECT",
    }
    confs = fetch_all(mes_runtime.mes_url, "confirmations")
    scrap = {c["confirmation_id"]: c["scrap_qty"] for c in confs if c["scrap_qty"] > 0}
    negative = {
        c["confirmation_id"] for c in confs if c["scrap_qty"] < 0
    }  # MES defect only
    assert negative
    per_conf: dict[str, int] = {}
    for d in data["defects"]:
        per_conf[d["confirmation_id"]] = (
            per_conf.get(d["confirmation_id"], 0) + d["qty"]
        )
        assert d["defect_text_zh"]
    assert {k: v for k, v in per_conf.items() if k not in negative} == scrap
    assert call(f"{base}/defects?limit=1", key=None)[0] == 401


def test_batch_drops_everything_once(small_world: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    index = read_index(small_world)
    rt = Runtime(small_world, mes_port=0, qms_port=0, inbox=inbox)
    rt.start()
    rt.stop()
    delivered = sorted(
        str(p.relative_to(inbox))
        for p in inbox.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    assert delivered == sorted(f"{s}/{n}" for _a, s, n in index)
    assert {p.parent.name for p in inbox.rglob("*.csv")} == {"wms", "scada", "ems"}
    # the platform archives a file; a restarted simulator must not deliver it again
    archived = (
        inbox / "wms" / index[0][2]
        if index[0][1] == "wms"
        else next(inbox.glob("wms/*"))
    )
    shutil.move(archived, tmp_path / archived.name)
    rt2 = Runtime(small_world, mes_port=0, qms_port=0, inbox=inbox)
    assert rt2.dropper.tick() == 0
    assert not archived.exists()


def test_live_clock_drops_only_due_files(small_world: Path, tmp_path: Path) -> None:
    index = read_index(small_world)
    cut = index[len(index) // 2][0]
    rt = Runtime(
        small_world,
        mes_port=0,
        qms_port=0,
        inbox=tmp_path / "in",
        clock_mode="live",
        speed=0.0,
        start=iso(cut),
    )
    assert rt.dropper.tick() == sum(1 for at, _s, _n in index if at <= cut)
    assert rt.dropper.tick() == 0
