"""WMS: legacy CSV files (GB18030, `;`, CRLF) dropped hourly (`[wms] movement_file_minutes`) —
movements — and a daily cycle count.

Movements: RECEIPT (raw lots), ISSUE (to production; one per MES consumption, true quantities),
PUTAWAY (produced lots to finished goods), TRANSFER (between raw-material locations). The daily
cycle count resets the book to the counted quantity. Times are site-local wall time without offset.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from plant_sim import rng as rngmod
from plant_sim.timeutil import local_naive

ENCODING = "gb18030"
MOVEMENT_COLUMNS = [
    "movement_id",
    "movement_type",
    "event_time",
    "site",
    "material",
    "material_desc",
    "lot",
    "qty",
    "unit",
    "from_loc",
    "to_loc",
    "reference",
]
COUNT_COLUMNS = [
    "count_id",
    "site",
    "count_date",
    "counted_time",
    "material",
    "material_desc",
    "unit",
    "book_qty",
    "counted_qty",
]


def legacy_code(material: str) -> str:
    """The code the old WMS used before the ERP migration (in erp.material_xref as WMS_LEGACY)."""
    return f"L-{material}"


def _q(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


class WmsSystem:
    """Writes WMS movement files per hour (or configured period) and one cycle-count file per production date."""

    name = "wms"

    def start(self, gen: Any) -> None:
        self.book: dict[tuple[str, str], float] = defaultdict(float)
        self.seq = 0

    def _write(
        self,
        gen: Any,
        name: str,
        header: list[str],
        rows: list[list[str]],
        available_at: int,
    ) -> None:
        text = "\r\n".join(";".join(r) for r in [header, *rows]) + "\r\n"
        data = text.encode(ENCODING)
        gen.drops.path("wms", name).write_bytes(data)
        gen.drops.register("wms", name, available_at)
        if gen.defects.hit("wms_duplicate_file"):
            dup = name.replace(".csv", "_RESEND.csv")
            gen.drops.path("wms", dup).write_bytes(data)
            gen.drops.register("wms", dup, available_at + 1200)
            gen.defects.record(
                "wms_duplicate_file", file_name=dup, detail=f"copy of {name}"
            )

    def day(self, gen: Any, ev: Any) -> None:
        site = ev.site
        tz = site.tz
        cfg = gen.cfg
        r = rngmod.stream(gen.seed, "wms", site.code, ev.day.isoformat())
        events: list[tuple[int, str, str, str, float, str, str, str, str]] = []
        for rc in ev.receipts:
            po = f"45{rc.receipt_id[-7:]}"
            events.append(
                (
                    rc.received_at,
                    "RECEIPT",
                    rc.material,
                    rc.lot_id,
                    rc.qty,
                    cfg.material(rc.material).unit,
                    "DOCK",
                    "RM-01",
                    po,
                )
            )
        for k in ev.consumptions:
            events.append(
                (
                    k.conf.end,
                    "ISSUE",
                    k.material,
                    k.lot_id,
                    k.qty,
                    cfg.material(k.material).unit,
                    "RM-01",
                    k.conf.op.machine.line_code,
                    k.conf.op.wo.work_order_id,
                )
            )
        for lot, c in ev.produced_lots:
            events.append(
                (
                    c.end + 600,
                    "PUTAWAY",
                    c.op.wo.product.erp_material,
                    lot,
                    float(c.good),
                    "PCS",
                    c.op.machine.line_code,
                    "FG-01",
                    c.op.wo.work_order_id,
                )
            )
        for rc in ev.receipts[:1]:
            events.append(
                (
                    rc.received_at + 1800,
                    "TRANSFER",
                    rc.material,
                    rc.lot_id,
                    round(rc.qty * 0.1, 3),
                    cfg.material(rc.material).unit,
                    "RM-01",
                    "RM-02",
                    "TR",
                )
            )
        events.sort(key=lambda e: (e[0], e[1], e[3]))
        # one file per period (an hour by default), named after the period's first minute and
        # dropped `wms_file_delay_minutes` after its end
        period = cfg.wms_file_minutes * 60
        delay = round(cfg.wms_file_delay_minutes * 60)
        by_period: dict[int, list[list[str]]] = defaultdict(list)
        for at, mtype, mat, lot, qty, unit, frm, to, ref in events:
            if mtype in ("RECEIPT", "ISSUE") and mat in {
                m.erp_material for m in cfg.materials
            }:
                self.book[(site.code, mat)] += qty if mtype == "RECEIPT" else -qty
            self.seq += 1
            mid = f"{site.code}{self.seq:09d}"
            code = mat
            if gen.defects.hit("wms_xref_code"):
                code = legacy_code(mat)
                gen.defects.record(
                    "wms_xref_code", record_id=mid, detail=f"{code} = {mat}"
                )
            desc = (
                cfg.material(mat).name_zh
                if mat in {m.erp_material for m in cfg.materials}
                else cfg.product(mat).name_zh
            )
            by_period[at - at % period].append(
                [
                    mid,
                    mtype,
                    local_naive(at, tz),
                    site.code,
                    code,
                    desc,
                    lot,
                    _q(qty),
                    unit,
                    frm,
                    to,
                    ref,
                ]
            )
        for start in sorted(by_period):
            stamp = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y%m%dT%H%MZ")
            self._write(
                gen,
                f"WMS_MOVEMENTS_{site.code}_{stamp}.csv",
                MOVEMENT_COLUMNS,
                by_period[start],
                start + period + delay,
            )
        # cycle count at the end of the production date, then ADJUST to the counted quantity
        end = ev.shifts[-1].end
        rows = []
        for mat in cfg.materials:
            key = (site.code, mat.erp_material)
            if key not in self.book:
                continue
            book = round(self.book[key], 3)
            shrink = 0.0
            if r.random() < 0.4 and book > 0:
                shrink = (
                    round(book * r.uniform(0.001, 0.01), 3)
                    if mat.unit == "kg"
                    else float(min(int(book), r.randint(1, 20)))
                )
            counted = round(book - shrink, 3)
            self.seq += 1
            rows.append(
                [
                    f"CC{self.seq:09d}",
                    site.code,
                    ev.day.isoformat(),
                    local_naive(end - 900, tz),
                    mat.erp_material,
                    mat.name_zh,
                    mat.unit,
                    _q(book),
                    _q(counted),
                ]
            )
            gen.truth.row(
                "inventory_material_day",
                {
                    "site_code": site.code,
                    "material_number": mat.erp_material,
                    "balance_date": ev.day.isoformat(),
                    "unit": mat.unit,
                    "book_qty": book,
                    "physical_qty": counted,
                    "diff_qty": round(counted - book, 3),
                },
            )
            gen.erp.inventory_balance(site, mat, ev.day, counted)
            self.book[key] = counted
        self._write(
            gen,
            f"WMS_CYCLECOUNT_{site.code}_{ev.day.strftime('%Y%m%d')}.csv",
            COUNT_COLUMNS,
            rows,
            end + 600,
        )

    def finish(self, gen: Any) -> None:
        return None
