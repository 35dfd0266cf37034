"""Configs: the default generates fast (timing printed), a second site in Asia/Shanghai works."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from plant_sim.config import load_config
from plant_sim.world import generate_world

CONFIGS = Path(__file__).resolve().parents[2] / "include" / "plant_sim" / "configs"


def test_default_config_generates(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "default.toml")
    assert (len(cfg.sites), len(cfg.lines), len(cfg.machines), cfg.days) == (
        1,
        3,
        12,
        14,
    )
    t0 = time.perf_counter()
    manifest = generate_world(cfg, 42, tmp_path)
    seconds = time.perf_counter() - t0
    print(f"\ndefault config (12 machines, 14 days) generated in {seconds:.2f} s")
    assert manifest["first_shift_start"] == "2026-10-19T04:00:00Z"  # 06:00 CEST
    assert manifest["last_shift_end"] == "2026-11-02T05:00:00Z"  # 06:00 CET
    with open(tmp_path / "truth" / "oee_machine_shift.csv", encoding="utf-8") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == 12 * 14 * 3


def test_second_site_in_shanghai(tmp_path: Path) -> None:
    text = (CONFIGS / "small.toml").read_text(encoding="utf-8")
    text = text.replace(
        "[[products]]",
        """[[sites]]
code = "SHA"
name_en = "Shanghai Plant"
name_zh = "上海工厂"
timezone = "Asia/Shanghai"

[[lines]]
site = "SHA"
code = "SHA-L1"
area = "SHA-MOLD"
name_en = "Moulding line 1"
name_zh = "注塑线1"
machine_type = "MOLD"
machines = 2
products = ["100047"]

[[products]]""",
        1,
    )
    cfg_path = tmp_path / "two_sites.toml"
    cfg_path.write_text(text, encoding="utf-8")
    manifest = generate_world(load_config(cfg_path), 5, tmp_path / "w")
    assert [s["timezone"] for s in manifest["sites"]] == [
        "Europe/Berlin",
        "Asia/Shanghai",
    ]
    with open(tmp_path / "w" / "truth" / "shift_calendar.csv", encoding="utf-8") as fh:
        cal = [r for r in csv.DictReader(fh) if r["site_code"] == "SHA"]
    assert (
        cal[0]["shift_start_at"] == "2026-10-23T22:00:00Z"
    )  # 06:00 in Shanghai (UTC+8)
    assert {int(r["shift_seconds"]) for r in cal} == {28800}  # no DST in China
    assert (
        json.loads((tmp_path / "w" / "world.json").read_text())["mes_counts"][
            "work_orders"
        ]
        > 0
    )
    assert any(
        p.name.startswith("WMS_MOVEMENTS_SHA_")
        for p in (tmp_path / "w" / "drops" / "wms").iterdir()
    )


def test_orders_per_line_day_sets_how_many_orders_a_line_gets(tmp_path: Path) -> None:
    """Without the key, the range the plant always drew from ([1, 3]); with one, every
    line-day gets that many orders (the latency bench's plant confirms all day with [24, 32]);
    a range that is not two whole numbers 1 <= low <= high is refused."""
    import pytest

    text = (CONFIGS / "small.toml").read_text(encoding="utf-8")
    dense = tmp_path / "dense.toml"
    dense.write_text(text.replace("order_load = 0.72", "order_load = 0.72\n"
                                  "orders_per_line_day = [5, 5]", 1), encoding="utf-8")
    cfg = load_config(dense)
    assert cfg.orders_per_line_day == (5, 5)
    assert load_config(CONFIGS / "small.toml").orders_per_line_day == (1, 3)
    generate_world(cfg, 5, tmp_path / "w")
    with open(tmp_path / "w" / "erp" / "production_orders.csv", encoding="utf-8") as fh:
        per_line_day: dict[tuple[str, str], int] = {}
        for order in csv.DictReader(fh):
            key = (order["line_code"], order["released_at"][:10])
            per_line_day[key] = per_line_day.get(key, 0) + 1
    assert len(per_line_day) == len(cfg.lines) * cfg.days
    assert set(per_line_day.values()) == {5}
    for bad in ("[0, 2]", "[3, 2]", "[1.5, 2]", "3"):
        dense.write_text(text.replace("order_load = 0.72", "order_load = 0.72\n"
                                      f"orders_per_line_day = {bad}", 1), encoding="utf-8")
        with pytest.raises(ValueError, match="orders_per_line_day"):
            load_config(dense)
