"""Orders, inventory and genealogy marts equal the simulator's truth.

The 14-day plant is extracted from every system into raw_* (daily windows from 30 days before
the first shift, since ERP orders are created days before production, to two days after the
last, since WMS cycle counts arrive ~28 h after their date), `dbt build` runs through the dbt
CLI, and the marts are compared with the `truth` schema:
inventory book/physical/diff exactly, genealogy edges as a set, the orphan consumption reported
as an unmapped code, WMS legacy codes resolved, Chinese texts intact, and produced good pieces
per ERP order equal to the MES confirmations (and, summed, to the truth per line and day).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from _pipeline import build_whole_plant, rows

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def built(plant, warehouse_dsn):
    """The whole plant extracted and built (shared with the other marts modules)."""
    return build_whole_plant(plant, warehouse_dsn)


def test_inventory_accuracy_equals_truth(built):
    mart = rows(
        built,
        """
        select site_code, material_number, balance_date, book_quantity, physical_quantity,
               diff_quantity
        from marts.mart_inventory_accuracy""",
    )
    truth = rows(
        built,
        """
        select site_code, material_number, balance_date, book_qty, physical_qty, diff_qty
        from truth.inventory_material_day""",
    )
    norm = lambda rs: {
        (r[0], r[1], r[2]): tuple(Decimal(str(v)).normalize() for v in r[3:])
        for r in rs
    }
    ours, theirs = norm(mart), norm(truth)
    print(f"\ninventory: {len(ours)} mart rows, {len(theirs)} truth rows")
    assert len(theirs) > 0
    assert ours.keys() == theirs.keys()
    differences = [(k, ours[k], theirs[k]) for k in theirs if ours[k] != theirs[k]]
    assert not differences, differences[:10]


def edge_set(rs) -> set[tuple]:
    return {(r[0], r[1], r[2], r[3], Decimal(str(r[4])).normalize()) for r in rs}


def test_genealogy_edges_equal_truth(built):
    truth = edge_set(
        rows(
            built,
            """
        select parent_lot_id, child_lot_id, parent_material_number, child_material_number, qty
        from truth.genealogy_edges""",
        )
    )
    facts = edge_set(
        rows(
            built,
            """
        select consumed_lot_id, produced_lot_id, consumed_material_number,
               produced_material_number, consumed_quantity
        from conformed.fct_material_lot_link""",
        )
    )
    mart = edge_set(
        rows(
            built,
            """
        select distinct consumed_lot_id, produced_lot_id, consumed_material_number,
               produced_material_number, consumed_quantity
        from marts.mart_genealogy where direction = 'backward'""",
        )
    )
    print(
        f"\ngenealogy: {len(truth)} truth edges, {len(facts)} fact edges, {len(mart)} mart"
    )
    assert truth
    assert facts == truth, (sorted(facts - truth)[:5], sorted(truth - facts)[:5])
    assert mart == truth, (sorted(mart - truth)[:5], sorted(truth - mart)[:5])
    forward = edge_set(
        rows(
            built,
            """
        select distinct consumed_lot_id, produced_lot_id, consumed_material_number,
               produced_material_number, consumed_quantity
        from marts.mart_genealogy where direction = 'forward'""",
        )
    )
    assert forward == truth


def test_orphan_consumptions_reported(built):
    orphans = rows(
        built,
        """
        select record_id from truth.injected_defects where kind = 'mes_orphan'""",
    )
    assert orphans
    reported = rows(
        built,
        """
        select source_system, source_entity, source_record_id, external_code
        from conformed.rpt_unmapped_material_codes""",
    )
    seen = {r[2] for r in reported}
    missing = [o[0] for o in orphans if o[0] not in seen]
    print(f"\nunmapped: {len(reported)} rows reported, {len(orphans)} orphans injected")
    assert not missing, missing
    assert {r[3] for r in reported if r[2] in {o[0] for o in orphans}} == {"RM-XX-999"}


def test_wms_legacy_codes_resolve(built):
    legacy = rows(
        built,
        """
        select m.movement_id, m.material_number, m.source_material_code
        from conformed.fct_material_movement m
        where m.source_material_code like 'L-%'""",
    )
    injected = rows(
        built,
        """
        select count(*) from truth.injected_defects where kind = 'wms_xref_code'""",
    )[0][0]
    print(f"\nlegacy WMS codes: {len(legacy)} movements, {injected} injected")
    assert len(legacy) >= injected > 0
    erp = {
        r[0] for r in rows(built, "select material_number from conformed.dim_material")
    }
    assert all(r[1] in erp and not r[1].startswith("L-") for r in legacy)
    unresolved = rows(
        built,
        "select count(*) from conformed.fct_material_movement "
        "where material_number is null",
    )[0][0]
    assert unresolved == 0


def test_chinese_descriptions_intact(built):
    names = rows(
        built,
        """
        select d.material_number, d.material_name_zh, s.name_zh
        from conformed.dim_material d join erp.materials s using (material_number)""".replace(
            "erp.materials", "raw_erp.materials"
        ),
    )
    assert names and all(r[1] == r[2] for r in names)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in r[1] or "") for r in names)
    descs = rows(
        built,
        """
        select distinct material_description from staging.stg_wms__movements
        where material_description is not null""",
    )
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in r[0]) for r in descs)
    assert not any("\ufffd" in r[0] for r in descs)


def test_production_vs_plan_equals_confirmations(built):
    """Good pieces per ERP order = the confirmed good pieces of its work order (every operation:
    a work order's operations run in parallel on the line's machines), from raw, latest version
    per confirmation (quarantined ones never reach raw); per line, the sums equal the truth."""
    mart = {
        r[0]: (r[1], r[2])
        for r in rows(
            built,
            """
        select order_number, line_code, produced_good_count from marts.mart_production_vs_plan""",
        )
    }
    confirmed = dict(
        rows(
            built,
            """
        with latest as (
            select distinct on (confirmation_id) *
            from raw_mes.confirmations
            order by confirmation_id, updated_at desc
        ), work_orders as (
            select distinct on (work_order_id) work_order_id, erp_order_number
            from raw_mes.work_orders
            order by work_order_id, updated_at desc
        )
        select w.erp_order_number, sum(c.good_qty)::bigint
        from latest c join work_orders w using (work_order_id)
        group by 1""",
        )
    )
    total = sum(v[1] for v in mart.values())
    print(f"\nproduction vs plan: {len(mart)} orders, {total} good pieces")
    assert confirmed and total > 0
    assert {k: v[1] for k, v in mart.items() if v[1]} == confirmed
    truth_lines = dict(
        rows(
            built,
            """
        select line_code, sum(good_qty)::bigint from truth.production_line_day group by 1""",
        )
    )
    mart_lines: dict[str, int] = {}
    for line, good in mart.values():
        mart_lines[line] = mart_lines.get(line, 0) + good
    assert mart_lines == truth_lines


def test_wms_local_times_in_utc(built):
    """WMS local wall times are converted with the site's zone (the plant spans the DST change,
    repeated hour included): every movement lies in the UTC hour its file name carries."""
    total, in_file_hour = rows(
        built,
        """
        select count(*),
               count(*) filter (where date_trunc('hour', movement_at) = to_timestamp(
                   substring(source_file_name from '(\\d{8}T\\d{2})00Z'), 'YYYYMMDD"T"HH24'
               )::timestamp at time zone 'UTC')
        from staging.stg_wms__movements""",
    )[0]
    print(f"\nWMS movements in their file's UTC hour: {in_file_hour} of {total}")
    assert total > 0 and in_file_hour == total


def test_source_health_counts_rejects(built):
    """Per system: loads and rejects from ops; the MES rejects are the quarantined defects."""
    health = {
        r[0]: r[1:]
        for r in rows(
            built,
            "select system, batch_count, rows_loaded_count, rows_quarantined_count,"
            " quarantine_record_count from marts.mart_source_health",
        )
    }
    quarantined = rows(
        built,
        "select count(*) from truth.injected_defects"
        " where system = 'mes' and entity = 'confirmations' and action = 'quarantine'",
    )[0][0]
    print(f"\nsource health: {health}")
    assert set(health) >= {"mes", "erp", "wms"}
    assert all(h[0] > 0 and h[1] > 0 for h in health.values())
    assert health["mes"][2] == health["mes"][3] == quarantined > 0


def test_material_snapshot_has_current_versions(built):
    current = rows(
        built, "select count(*) from snapshots.snap_material where dbt_valid_to is null"
    )
    materials = rows(built, "select count(*) from raw_erp.materials")
    assert current == materials and current[0][0] > 0
