"""Same seed and config give byte-identical worlds; another seed gives another world."""

from __future__ import annotations

import hashlib
from pathlib import Path

from plant_sim.config import load_config
from plant_sim.world import generate_world


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(tmp_path: Path, small_config_path: Path) -> None:
    cfg = load_config(small_config_path)
    generate_world(cfg, 11, tmp_path / "a")
    generate_world(cfg, 11, tmp_path / "b")
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert len(a) >= 250
    for name in (
        "mes/mes.sqlite",
        "qms/qms.sqlite",
        "truth/oee_machine_shift.csv",
        "truth/injected_defects.csv",
        "erp/production_orders.csv",
        "eam/failures.csv",
        "drops/index.csv",
        "drops/wms/WMS_CYCLECOUNT_ERF_20261024.csv",
        "drops/plm/PLM_EXPORT_ERF_20261024.xml",
    ):
        assert name in a, name
    assert a == b


def test_other_seed_other_world(tmp_path: Path, small_config_path: Path) -> None:
    cfg = load_config(small_config_path)
    generate_world(cfg, 11, tmp_path / "a")
    generate_world(cfg, 12, tmp_path / "b")
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert a["truth/oee_machine_shift.csv"] != b["truth/oee_machine_shift.csv"]
    assert a["truth/shift_calendar.csv"] == b["truth/shift_calendar.csv"]
