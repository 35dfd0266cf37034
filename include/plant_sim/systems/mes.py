"""MES: the records the world's events become, stored in a SQLite change feed that the HTTP
server pages through.

Each entity is one table `(updated_at INTEGER epoch, id TEXT, body TEXT JSON)` with primary key
`(updated_at, id)`, so keyset pagination by `(updated_at, id)` is an index range scan and serving
stays memory-bounded however large the world is.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from plant_sim.reasons import REASONS
from plant_sim.timeutil import iso

ENTITIES: dict[str, tuple[str, str]] = {
    "work-orders": ("work_orders", "work_order_id"),
    "operations": ("operations", "operation_id"),
    "confirmations": ("confirmations", "confirmation_id"),
    "machine-states": ("machine_states", "state_id"),
    "material-consumptions": ("material_consumptions", "consumption_id"),
    "produced-lots": ("produced_lots", "lot_id"),
}
"""URL entity → (table name, id field)."""


def dumps(record: dict[str, Any]) -> str:
    """Compact UTF-8 JSON (Chinese kept as-is), stable key order as built."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class FeedStore:
    """Append-only writer of a SQLite change feed (one table per entity)."""

    def __init__(self, path: Path, entities: dict[str, tuple[str, str]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        self.path = path
        self.entities = entities
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=OFF")
        self.conn.execute("PRAGMA synchronous=OFF")
        for table, _id in entities.values():
            self.conn.execute(
                f"CREATE TABLE {table} (updated_at INTEGER NOT NULL, id TEXT NOT NULL, "
                "body TEXT NOT NULL, PRIMARY KEY (updated_at, id)) WITHOUT ROWID"
            )
        self.buffers: dict[str, list[tuple[int, str, str]]] = {
            t: [] for t, _ in entities.values()
        }
        self.counts: dict[str, int] = {t: 0 for t, _ in entities.values()}

    def add(self, entity: str, record: dict[str, Any], updated_at: int) -> None:
        """Queue one record version; `record` must already carry its `updated_at` text."""
        table, id_field = self.entities[entity]
        self.buffers[table].append((updated_at, record[id_field], dumps(record)))

    def flush(self) -> None:
        """Write queued rows (sorted, so the file does not depend on emission order)."""
        for table, rows in self.buffers.items():
            if rows:
                rows.sort()
                self.conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows)
                self.counts[table] += len(rows)
                rows.clear()
        self.conn.commit()

    def close(self) -> None:
        """Flush and close the database."""
        self.flush()
        self.conn.close()


# ---- the world's events as MES records (`world`: plant_sim.world.WorldGen) ---------------
def work_order_record(world: Any, wo: Any, status: str, updated: int) -> None:
    """A work order's new version (never before its previous one)."""
    updated = max(updated, wo.last_updated + 1)
    wo.last_updated = updated
    world.mes.add(
        "work-orders",
        {
            "work_order_id": wo.work_order_id,
            "erp_order_number": wo.erp_order_number,
            "site_code": wo.site.code,
            "line_code": wo.line.code,
            "item_code": wo.product.mes_item,
            "planned_qty": wo.planned_qty,
            "unit": "PCS",
            "due_date": wo.due_date.isoformat(),
            "status": status,
            "released_at": iso(wo.released_at),
            "actual_start_at": iso(wo.start) if wo.start is not None else None,
            "actual_end_at": iso(wo.end) if wo.end is not None else None,
            "updated_at": iso(updated),
        },
        updated,
    )


def operation_record(world: Any, op: Any, status: str, updated: int) -> None:
    """An operation's new version (never before its previous one)."""
    updated = max(updated, op.last_updated + 1)
    op.last_updated = updated
    m = op.machine
    world.mes.add(
        "operations",
        {
            "operation_id": op.operation_id,
            "work_order_id": op.wo.work_order_id,
            "operation_seq": op.seq,
            "site_code": m.site_code,
            "line_code": m.line_code,
            "machine_code": m.code,
            "item_code": op.wo.product.mes_item,
            "planned_qty": op.planned_qty,
            "ideal_cycle_time_seconds": op.ideal_cycle,
            "status": status,
            "actual_start_at": iso(op.start) if op.start is not None else None,
            "actual_end_at": iso(op.end) if op.end is not None else None,
            "updated_at": iso(updated),
        },
        updated,
    )


def emit_day(world: Any, ev: Any) -> None:
    """Write the day's states, confirmations, lots and consumptions (with defects) to the MES."""
    d = world.defects
    for iv in ev.intervals:
        m = iv.machine
        sim_seq = world.counters.get(f"ST-{m.code}", 0) + 1
        world.counters[f"ST-{m.code}"] = sim_seq
        state_id = f"{m.code}-{sim_seq:07d}"
        reason = REASONS.get(iv.reason) if iv.reason else None
        updated = iv.end + world.rec_delay()
        if d.hit("mes_out_of_order"):
            updated = iv.end + world.rng.randint(1800, 5400)
            d.record("mes_out_of_order", state_id)
        world.mes.add(
            "machine-states",
            {
                "state_id": state_id,
                "site_code": m.site_code,
                "line_code": m.line_code,
                "machine_code": m.code,
                "state": iv.state,
                "reason_code": iv.reason,
                "reason_text_en": reason[1] if reason else None,
                "reason_text_zh": reason[2] if reason else None,
                "operation_id": iv.op.operation_id if iv.op else None,
                "start_at": iso(iv.start),
                "end_at": iso(iv.end),
                "production_date": iv.shift.production_date.isoformat(),
                "shift_code": iv.shift.shift_code,
                "updated_at": iso(updated),
            },
            updated,
        )
    for c in ev.confirmations:
        op = c.op
        updated = c.end + world.rec_delay()
        rec: dict[str, Any] = {
            "confirmation_id": c.confirmation_id,
            "operation_id": op.operation_id,
            "work_order_id": op.wo.work_order_id,
            "site_code": op.machine.site_code,
            "line_code": op.machine.line_code,
            "machine_code": op.machine.code,
            "item_code": op.wo.product.mes_item,
            "production_date": c.shift.production_date.isoformat(),
            "shift_code": c.shift.shift_code,
            "start_at": iso(c.start),
            "end_at": iso(c.end),
            "good_qty": c.good,
            "scrap_qty": c.scrap,
            "rework_qty": c.rework,
            "unit": "PCS",
            "updated_at": iso(updated),
        }
        if d.hit("mes_null_mandatory"):
            rec["machine_code"] = None
            c.quarantined = True
            d.record("mes_null_mandatory", c.confirmation_id)
        elif d.hit("mes_negative_qty"):
            rec["scrap_qty"] = -(c.scrap + 1)
            c.quarantined = True
            d.record("mes_negative_qty", c.confirmation_id)
        if d.hit("mes_late"):
            updated = c.end + world.rng.randint(1800, 6600)
            rec["updated_at"] = iso(updated)
            d.record("mes_late", c.confirmation_id)
        world.mes.add("confirmations", rec, updated)
        if not c.quarantined and d.hit("mes_duplicate"):
            dup_at = updated + world.rng.randint(60, 3600)
            world.mes.add(
                "confirmations", {**rec, "updated_at": iso(dup_at)}, dup_at
            )
            d.record("mes_duplicate", c.confirmation_id)
    for lot, c in ev.produced_lots:
        updated = c.end + world.rec_delay()
        world.mes.add(
            "produced-lots",
            {
                "lot_id": lot,
                "work_order_id": c.op.wo.work_order_id,
                "operation_id": c.op.operation_id,
                "confirmation_id": c.confirmation_id,
                "machine_code": c.op.machine.code,
                "item_code": c.op.wo.product.mes_item,
                "qty": c.good,
                "unit": "PCS",
                "produced_at": iso(c.end),
                "updated_at": iso(updated),
            },
            updated,
        )
    for k in ev.consumptions:
        mat = world.cfg.material(k.material)
        updated = k.conf.end + world.rec_delay()
        item, qty, unit = mat.mes_item, k.qty, mat.unit
        if d.hit("mes_orphan"):
            item = "RM-XX-999"
            k.quarantined = True
            d.record("mes_orphan", k.consumption_id)
        elif unit == "kg" and d.hit("mes_unit_mismatch"):
            qty, unit = round(k.qty * 1000, 3), "g"
            d.record("mes_unit_mismatch", k.consumption_id)
        world.mes.add(
            "material-consumptions",
            {
                "consumption_id": k.consumption_id,
                "operation_id": k.conf.op.operation_id,
                "work_order_id": k.conf.op.wo.work_order_id,
                "confirmation_id": k.conf.confirmation_id,
                "machine_code": k.conf.op.machine.code,
                "item_code": item,
                "lot_id": k.lot_id,
                "qty": qty,
                "unit": unit,
                "consumed_at": iso(k.conf.end),
                "produced_lot_id": k.produced_lot_id,
                "updated_at": iso(updated),
            },
            updated,
        )
