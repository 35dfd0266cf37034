"""ERP and EAM load into their own Postgres databases; the ERP inbound interface answers
accepted / duplicate / rejected per idempotency key."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from plant_sim.loaders import load_world, move_visible


@pytest.fixture(scope="module")
def plant_dbs(scratch_dbs, small_world: Path) -> dict[str, str]:
    dsns = {"erp": scratch_dbs("sim_test_erp"), "eam": scratch_dbs("sim_test_eam")}
    load_world(small_world, None, dsns["erp"], dsns["eam"])
    return dsns


def _csv_count(path: Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def test_tables_loaded(plant_dbs, small_world: Path) -> None:
    import psycopg

    for system in ("erp", "eam"):
        with psycopg.connect(plant_dbs[system]) as conn:
            for path in sorted((small_world / system).glob("*.csv")):
                n = conn.execute(
                    f"select count(*) from {system}.{path.stem}"
                ).fetchone()[0]
                assert n == _csv_count(path), path.stem
    with psycopg.connect(plant_dbs["erp"]) as conn:
        names = {r[0] for r in conn.execute("select name_zh from erp.materials")}
        assert "齿轮箱壳体A45" in names
        xref = dict(
            conn.execute(
                "select external_code, material_number from erp.material_xref where system = 'MES'"
            )
        )
        assert xref["ITM-A-045"] == "100045"
        col = conn.execute(
            "select data_type from information_schema.columns where table_schema = 'erp' "
            "and table_name = 'production_orders' and column_name = 'released_at'"
        ).fetchone()[0]
        assert col == "timestamp without time zone"
    with psycopg.connect(plant_dbs["eam"]) as conn:
        tree = conn.execute(
            "with recursive t as (select equipment_id, 0 as depth from eam.equipment "
            "where parent_equipment_id is null union all select e.equipment_id, t.depth + 1 "
            "from eam.equipment e join t on e.parent_equipment_id = t.equipment_id) "
            "select max(depth), count(*) from t"
        ).fetchone()
        assert tree == (4, 9)


def test_inbound_postings(plant_dbs) -> None:
    import psycopg

    with psycopg.connect(plant_dbs["erp"], autocommit=True) as conn:
        order = conn.execute(
            "select order_number, material_number from erp.production_orders "
            "order by 1 limit 1"
        ).fetchone()
        msg = {
            "order_number": order[0],
            "material_number": order[1],
            "yield_qty": 100,
            "scrap_qty": 2,
            "rework_qty": 1,
        }

        def post(key: str, payload: dict, kind: str = "production_confirmation"):
            return conn.execute(
                "select status, reason, erp_document_number from "
                "erp.post_message(%s, %s, %s::jsonb)",
                (key, kind, json.dumps(payload)),
            ).fetchone()

        ok = post("k1", msg)
        assert ok[0] == "accepted" and ok[1] is None and ok[2]
        dup = post("k1", msg)
        assert dup[0] == "duplicate" and dup[2] == ok[2]
        assert post("k1", {**msg, "yield_qty": 99})[0] == "rejected"
        assert post("k2", {**msg, "order_number": "nope"})[:2] == (
            "rejected",
            "unknown order_number nope",
        )
        assert (
            post("k3", {**msg, "scrap_qty": -1})[1]
            == "scrap_qty must be a non-negative number"
        )
        assert post("k4", {**msg, "material_number": "999"})[0] == "rejected"
        assert post("k5", msg, kind="weird")[1] == "unknown message_type weird"
        assert post("k6", {**msg, "reversal_of": "k1"})[0] == "accepted"
        assert (
            post("k7", {**msg, "reversal_of": "k1"})[1]
            == "posting k1 is already reversed"
        )
        rows = conn.execute(
            "select idempotency_key, status from erp.inbound_postings "
            "order by posting_id"
        ).fetchall()
        assert rows == [
            ("k1", "accepted"),
            ("k2", "rejected"),
            ("k3", "rejected"),
            ("k4", "rejected"),
            ("k5", "rejected"),
            ("k6", "accepted"),
            ("k7", "rejected"),
        ]


def test_live_rows_appear_as_time_passes(scratch_dbs, small_world: Path) -> None:
    import psycopg

    dsn = scratch_dbs("sim_test_eam_live")
    load_world(small_world, None, None, dsn, visible_until="2026-10-25T00:00:00Z")
    with psycopg.connect(dsn) as conn:
        before = conn.execute(
            "select count(*), max(ended_at) from eam.failures"
        ).fetchone()
    total = _csv_count(small_world / "eam" / "failures.csv")
    assert before[0] < total
    assert before[1] is None or before[1].isoformat() < "2026-10-25"
    moved = move_visible(dsn, "eam", "infinity")
    assert moved > 0
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from eam.failures").fetchone()[0] == total
