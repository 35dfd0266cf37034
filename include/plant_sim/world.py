"""World generator: simulates the plant day by day and streams every system's output to disk.

Order of events per site and production date: ERP releases the day's production orders (MES work
orders, one operation per machine of the line) before the morning shift, raw-material lots are
received, then each shift is simulated machine by machine. Nothing here reads the wall clock; all
randomness comes from `rng.stream(seed, ...)`, so the same seed and config give identical files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plant_sim import rng as rngmod
from plant_sim.calendar import Shift, shifts_for_day
from plant_sim.config import Config, Line, Machine, Product, Site
from plant_sim.defects import Defects
from plant_sim.drops import DropIndex
from plant_sim.systems.mes import ENTITIES, FeedStore
from plant_sim.timeutil import iso
from plant_sim.truth import TruthWriter

REASONS: dict[str, tuple[str, str, str]] = {
    "NO_ORDER": ("idle", "No order", "无订单"),
    "WAIT_MAT": ("idle", "Waiting for material", "等待物料"),
    "CHANGEOVER": ("setup", "Product changeover", "产品换型"),
    "BREAK": ("planned_downtime", "Shift break", "班次休息"),
    "PM": ("planned_downtime", "Preventive maintenance", "预防性维护"),
    "MECH": ("unplanned_downtime", "Mechanical failure", "机械故障"),
    "ELEC": ("unplanned_downtime", "Electrical failure", "电气故障"),
    "TOOL": ("unplanned_downtime", "Tool breakage", "刀具损坏"),
    "JAM": ("unplanned_downtime", "Material jam", "卡料"),
}
"""reason_code → (state, English text, Chinese text)."""

FAILURE_REASONS = (("MECH", 0.35), ("ELEC", 0.2), ("TOOL", 0.3), ("JAM", 0.15))
BREAK_OFFSET_S = 4 * 3600
BREAK_S = 30 * 60
GENERATED = ("mes", "qms", "erp", "eam", "truth", "drops", "shopfloor")
"""Sub-folders `generate` owns (replaced on every run; `inbox/` is left alone)."""


@dataclass
class WorkOrder:
    """An MES work order released from an ERP production order."""

    work_order_id: str
    erp_order_number: str
    site: Site
    line: Line
    product: Product
    planned_qty: int
    due_date: dt.date
    released_at: int
    ops: list[Operation] = field(default_factory=list)
    start: int | None = None
    end: int | None = None
    done_ops: int = 0
    last_updated: int = 0


@dataclass
class Operation:
    """One operation of a work order on one machine."""

    operation_id: str
    wo: WorkOrder
    seq: int
    machine: Machine
    planned_qty: int
    ideal_cycle: float
    actual_cycle: float
    quality_factor: float
    remaining: int
    start: int | None = None
    end: int | None = None
    last_updated: int = 0


@dataclass
class Interval:
    """A machine state interval `[start, end)`; running intervals carry their piece completions."""

    machine: Machine
    state: str
    reason: str | None
    start: int
    end: int
    op: Operation | None
    shift: Shift
    cycle: float = 0.0
    pieces: int = 0

    def completions_before(self, t: int) -> int:
        """Pieces completed in `[start, t)`: piece k completes at `start + k*cycle`."""
        if self.pieces == 0 or t <= self.start:
            return 0
        if t >= self.end:
            return self.pieces
        # pieces completed at or before t (epsilon absorbs float error at exact multiples)
        return min(self.pieces, math.floor((t - self.start) / self.cycle + 1e-9))


@dataclass
class Confirmation:
    """An MES confirmation: one operation within one shift."""

    confirmation_id: str
    op: Operation
    shift: Shift
    start: int
    end: int
    good: int
    scrap: int
    rework: int
    quarantined: bool = False

    @property
    def produced(self) -> int:
        return self.good + self.scrap + self.rework


@dataclass
class Consumption:
    """Component quantity consumed by a confirmation from one material lot."""

    consumption_id: str
    conf: Confirmation
    material: str
    lot_id: str
    qty: float
    produced_lot_id: str | None
    quarantined: bool = False


@dataclass
class Receipt:
    """A raw-material lot received into the warehouse."""

    receipt_id: str
    site: Site
    material: str
    lot_id: str
    qty: float
    received_at: int


@dataclass
class DayEvents:
    """Everything that happened at one site on one production date (handed to the systems)."""

    site: Site
    day: dt.date
    day_index: int
    shifts: list[Shift]
    intervals: list[Interval] = field(default_factory=list)
    confirmations: list[Confirmation] = field(default_factory=list)
    consumptions: list[Consumption] = field(default_factory=list)
    produced_lots: list[tuple[str, Confirmation]] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    work_orders: list[WorkOrder] = field(default_factory=list)


class MachineSim:
    """Carries one machine's state from shift to shift and simulates each shift."""

    def __init__(self, world: WorldGen, machine: Machine) -> None:
        self.world = world
        self.m = machine
        self.rng = rngmod.stream(world.seed, "machine", machine.code)
        self.queue: deque[Operation] = deque()
        self.cur: Operation | None = None
        self.setup_left = 0
        self.last_product: str | None = None
        self.ttf_left = self._sample_ttf()
        self.state_seq = 0

    def _sample_ttf(self) -> int:
        return max(
            60, int(self.rng.expovariate(1.0 / (self.world.cfg.mtbf_run_hours * 3600)))
        )

    def _sample_ttr(self) -> int:
        mean = self.world.cfg.mttr_minutes * 60
        sigma = 0.6
        mu = math.log(mean) - sigma * sigma / 2
        return max(120, int(self.rng.lognormvariate(mu, sigma)))

    def _failure_reason(self) -> str:
        r = self.rng.random()
        acc = 0.0
        for code, p in FAILURE_REASONS:
            acc += p
            if r < acc:
                return code
        return FAILURE_REASONS[-1][0]

    def run_shift(self, shift: Shift, day_index: int, ev: DayEvents) -> None:
        """Simulate `shift`, appending intervals and confirmations to `ev`."""
        out: list[Interval] = []
        blocks: list[tuple[int, int, str]] = []
        pm_day = (self.m.index * 2 + len(self.m.line_code)) % 7
        if (
            shift.shift_code == "S1"
            and day_index % 7 == pm_day
            and self.world.cfg.pm_hours > 0
        ):
            blocks.append(
                (shift.start, shift.start + int(self.world.cfg.pm_hours * 3600), "PM")
            )
        b0 = shift.start + BREAK_OFFSET_S
        blocks.append((b0, b0 + BREAK_S, "BREAK"))
        t = shift.start
        for bs, be, reason in blocks:
            if t < bs:
                self._simulate(t, bs, shift, out)
            out.append(
                Interval(self.m, "planned_downtime", reason, bs, be, self.cur, shift)
            )
            t = be
        self._simulate(t, shift.end, shift, out)
        self._confirm(shift, out, ev)
        ev.intervals.extend(out)

    def _emit(self, out: list[Interval], iv: Interval) -> None:
        if iv.end > iv.start:
            out.append(iv)

    def _simulate(self, a: int, b: int, shift: Shift, out: list[Interval]) -> None:
        t = a
        while t < b:
            if self.cur is None:
                if self.queue and self.queue[0].wo.released_at <= t:
                    op = self.queue.popleft()
                    self.cur = op
                    if op.start is None:
                        self.world.op_started(op, t)
                    self.setup_left = (
                        self.rng.randint(15, 35) * 60
                        if op.wo.product.erp_material != self.last_product
                        else 0
                    )
                    if self.rng.random() < 0.12:
                        d = min(self.rng.randint(5, 20) * 60, b - t)
                        self._emit(
                            out,
                            Interval(self.m, "idle", "WAIT_MAT", t, t + d, op, shift),
                        )
                        t += d
                    continue
                nxt = self.queue[0].wo.released_at if self.queue else b
                until = min(b, max(nxt, t + 1))
                self._emit(
                    out, Interval(self.m, "idle", "NO_ORDER", t, until, None, shift)
                )
                t = until
                continue
            op = self.cur
            if self.setup_left > 0:
                d = min(self.setup_left, b - t)
                self._emit(
                    out, Interval(self.m, "setup", "CHANGEOVER", t, t + d, op, shift)
                )
                self.setup_left -= d
                t += d
                continue
            if self.ttf_left <= 0:
                d = min(self._sample_ttr(), b - t)
                reason = self._failure_reason()
                self._emit(
                    out,
                    Interval(self.m, "unplanned_downtime", reason, t, t + d, op, shift),
                )
                self.ttf_left = self._sample_ttf()
                t += d
                continue
            to_finish = math.ceil(op.remaining * op.actual_cycle - 1e-9)
            d = min(b - t, self.ttf_left, to_finish)
            n = (
                op.remaining
                if d == to_finish
                else min(op.remaining, int(d / op.actual_cycle))
            )
            self._emit(
                out,
                Interval(
                    self.m, "running", None, t, t + d, op, shift, op.actual_cycle, n
                ),
            )
            op.remaining -= n
            self.ttf_left -= d
            t += d
            if op.remaining == 0:
                self.last_product = op.wo.product.erp_material
                self.cur = None
                self.world.op_completed(op, t)

    def _confirm(self, shift: Shift, out: list[Interval], ev: DayEvents) -> None:
        """One confirmation per operation that produced pieces in this shift."""
        per_op: dict[str, list[Any]] = {}
        for iv in out:
            if iv.op is None:
                continue
            acc = per_op.get(iv.op.operation_id)
            if acc is None:
                per_op[iv.op.operation_id] = [iv.op, iv.start, iv.end, iv.pieces]
            else:
                acc[2] = iv.end
                acc[3] += iv.pieces
        qrng = self.rng
        cfg = self.world.cfg
        for op, start, end, pq in per_op.values():
            if pq == 0:
                continue
            ps = cfg.scrap_rate * op.quality_factor
            pr = ps + cfg.rework_rate * op.quality_factor
            scrap = rework = 0
            for _ in range(pq):
                r = qrng.random()
                if r < ps:
                    scrap += 1
                elif r < pr:
                    rework += 1
            conf = Confirmation(
                self.world.next_id("CNF", shift.site_code, 8),
                op,
                shift,
                start,
                end,
                pq - scrap - rework,
                scrap,
                rework,
            )
            ev.confirmations.append(conf)


class WorldGen:
    """Generates a world folder from a config and a seed."""

    def __init__(
        self, cfg: Config, seed: int, out: Path, systems: list[Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.out = out
        self.counters: dict[str, int] = {}
        self.rng = rngmod.stream(seed, "world")
        self.mes = FeedStore(out / "mes" / "mes.sqlite", ENTITIES)
        self.truth = TruthWriter(out / "truth")
        self.systems = systems if systems is not None else []
        self.lots: dict[tuple[str, str], deque[list[Any]]] = {}
        self.defects = Defects(seed, cfg.defects, self.truth)
        self.drops = DropIndex(out)
        self.erp: Any = None
        self.reliability: dict[str, list[int]] = {
            m.code: [0, 0, 0] for m in cfg.machines
        }

    # ---- ids and record times -------------------------------------------------------------
    def next_id(self, prefix: str, site_code: str, width: int) -> str:
        """Sequential id per prefix and site: `CNF-ERF-00000001`."""
        key = f"{prefix}-{site_code}"
        n = self.counters.get(key, 0) + 1
        self.counters[key] = n
        return f"{key}-{n:0{width}d}"

    def rec_delay(self) -> int:
        """Seconds between a business event and the MES recording it."""
        return self.rng.randint(5, 180)

    # ---- MES record builders ----------------------------------------------------------------
    def _wo_record(self, wo: WorkOrder, status: str, updated: int) -> None:
        updated = max(updated, wo.last_updated + 1)
        wo.last_updated = updated
        self.mes.add(
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

    def _op_record(self, op: Operation, status: str, updated: int) -> None:
        updated = max(updated, op.last_updated + 1)
        op.last_updated = updated
        m = op.machine
        self.mes.add(
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

    def op_started(self, op: Operation, t: int) -> None:
        """An operation's first activity on its machine."""
        op.start = t
        self._op_record(op, "in_progress", t + self.rec_delay())
        wo = op.wo
        if wo.start is None:
            wo.start = t
            self._wo_record(wo, "in_progress", t + self.rec_delay())

    def op_completed(self, op: Operation, t: int) -> None:
        """An operation produced its planned quantity."""
        op.end = t
        self._op_record(op, "completed", t + self.rec_delay())
        wo = op.wo
        wo.done_ops += 1
        if wo.done_ops == len(wo.ops):
            wo.end = t
            self._wo_record(wo, "completed", t + self.rec_delay())

    # ---- ERP releases and material lots ----------------------------------------------------
    def release_orders(
        self,
        site: Site,
        day: dt.date,
        shifts: list[Shift],
        ev: DayEvents,
        sims: dict[str, MachineSim],
    ) -> None:
        """ERP releases the day's production orders to the MES before the morning shift."""
        r = rngmod.stream(self.seed, "orders", site.code, day.isoformat())
        for line in (ln for ln in self.cfg.lines if ln.site_code == site.code):
            avail_s = sum(s.seconds - BREAK_S for s in shifts)
            n_orders = r.randint(1, 3)
            for k in range(n_orders):
                product = self.cfg.product(
                    line.products[r.randrange(len(line.products))]
                )
                per_machine = (
                    avail_s * self.cfg.order_load / product.ideal_cycle_s / n_orders
                )
                qty_per_machine = max(
                    10, int(per_machine * r.uniform(0.85, 1.15) / 10) * 10
                )
                qty = qty_per_machine * len(line.machines)
                released = shifts[0].start - r.randint(20, 80) * 60 + k * 60
                wo = WorkOrder(
                    work_order_id=self.next_id("WO", site.code, 6),
                    erp_order_number=str(
                        1000000
                        + self.counters.get(f"WO-{site.code}", 0)
                        + 100000 * self.cfg.sites.index(site)
                    ),
                    site=site,
                    line=line,
                    product=product,
                    planned_qty=qty,
                    due_date=day + dt.timedelta(days=2),
                    released_at=released,
                )
                for i, m in enumerate(line.machines):
                    ideal = round(product.ideal_cycle_s * m.cycle_factor, 1)
                    op = Operation(
                        operation_id=f"{wo.work_order_id}-{(i + 1) * 10:04d}",
                        wo=wo,
                        seq=(i + 1) * 10,
                        machine=m,
                        planned_qty=qty_per_machine,
                        ideal_cycle=ideal,
                        actual_cycle=ideal / r.uniform(0.86, 0.97),
                        quality_factor=r.uniform(0.5, 1.6),
                        remaining=qty_per_machine,
                    )
                    wo.ops.append(op)
                    sims[m.code].queue.append(op)
                self._wo_record(wo, "released", released + r.randint(1, 30))
                for op in wo.ops:
                    self._op_record(op, "released", released + r.randint(1, 30))
                ev.work_orders.append(wo)

    def receive_lots(
        self, site: Site, day: dt.date, shifts: list[Shift], ev: DayEvents
    ) -> None:
        """Raw-material lots arrive before the day (sized from the day's released orders)."""
        need: dict[str, float] = {}
        for wo in ev.work_orders:
            for b in wo.product.bom:
                need[b.component] = need.get(b.component, 0.0) + b.qty * wo.planned_qty
        r = rngmod.stream(self.seed, "receipts", site.code, day.isoformat())
        for mat in self.cfg.materials:
            if mat.erp_material not in need:
                continue
            factor = 1.6 if ev.day_index == 0 else r.uniform(1.0, 1.25)
            qty = math.ceil(need[mat.erp_material] * factor / 10) * 10
            lot = f"RL-{site.code}-{mat.erp_material}-{day.strftime('%Y%m%d')}"
            at = (
                shifts[0].start - 3600
                if ev.day_index == 0
                else shifts[0].start + r.randint(30, 90) * 60
            )
            self._add_lot(site, mat.erp_material, lot, float(qty), at, ev)

    def _add_lot(
        self, site: Site, material: str, lot: str, qty: float, at: int, ev: DayEvents
    ) -> None:
        self.lots.setdefault((site.code, material), deque()).append([lot, qty, at])
        ev.receipts.append(
            Receipt(self.next_id("GR", site.code, 7), site, material, lot, qty, at)
        )

    def consume(
        self, conf: Confirmation, ev: DayEvents, produced_lot: str | None
    ) -> None:
        """Book BOM consumption of a confirmation FIFO from the site's material lots."""
        site = conf.op.wo.site
        for b in conf.op.wo.product.bom:
            mat = self.cfg.material(b.component)
            left = round(b.qty * conf.produced, 3)
            lots = self.lots.setdefault((site.code, b.component), deque())
            while left > 1e-9:
                lot = next((x for x in lots if x[2] <= conf.end and x[1] > 1e-9), None)
                if lot is None:
                    extra = f"RL-{site.code}-{b.component}-X{self.next_id('XL', site.code, 4)[-4:]}"
                    self._add_lot(
                        site,
                        b.component,
                        extra,
                        float(math.ceil(left * 2 / 10) * 10),
                        conf.start,
                        ev,
                    )
                    continue
                take = round(min(left, lot[1]), 3)
                lot[1] = round(lot[1] - take, 3)
                left = round(left - take, 3)
                while lots and lots[0][1] <= 1e-9:
                    lots.popleft()
                if take > 0:
                    ev.consumptions.append(
                        Consumption(
                            self.next_id("CON", site.code, 8),
                            conf,
                            mat.erp_material,
                            lot[0],
                            take,
                            produced_lot,
                        )
                    )

    # ---- main loop ----------------------------------------------------------------------------
    def generate(self) -> dict[str, Any]:
        """Generate every site and day; returns the manifest."""
        cfg = self.cfg
        self.truth.row(
            "world",
            {
                "world_name": cfg.name,
                "seed": self.seed,
                "config_sha256": cfg.sha256,
                "start_date": cfg.start_date.isoformat(),
                "days": cfg.days,
            },
        )
        sims = {m.code: MachineSim(self, m) for m in cfg.machines}
        for system in self.systems:
            system.start(self)
        for di in range(cfg.days):
            day = cfg.start_date + dt.timedelta(days=di)
            for site in cfg.sites:
                shifts = shifts_for_day(site.code, day, site.tz)
                ev = DayEvents(site, day, di, shifts)
                self.release_orders(site, day, shifts, ev, sims)
                self.receive_lots(site, day, shifts, ev)
                machines = [m for m in cfg.machines if m.site_code == site.code]
                for shift in shifts:
                    n_before = len(ev.confirmations)
                    for m in machines:
                        sims[m.code].run_shift(shift, di, ev)
                    for conf in ev.confirmations[n_before:]:
                        lot = (
                            self.next_id("PL", site.code, 8) if conf.good > 0 else None
                        )
                        if lot:
                            ev.produced_lots.append((lot, conf))
                        self.consume(conf, ev, lot)
                self.emit_mes(ev)
                self.emit_truth(ev)
                for system in self.systems:
                    system.day(self, ev)
                self.mes.flush()
        for system in self.systems:
            system.finish(self)
        self.emit_reliability()
        self.mes.close()
        self.drops.close()
        self.truth.close()
        manifest = {
            "world": cfg.name,
            "seed": self.seed,
            "config_sha256": cfg.sha256,
            "start_date": cfg.start_date.isoformat(),
            "days": cfg.days,
            "sites": [{"code": s.code, "timezone": s.timezone} for s in cfg.sites],
            "first_shift_start": iso(
                min(
                    shifts_for_day(s.code, cfg.start_date, s.tz)[0].start
                    for s in cfg.sites
                )
            ),
            "last_shift_end": iso(
                max(
                    shifts_for_day(
                        s.code, cfg.start_date + dt.timedelta(days=cfg.days - 1), s.tz
                    )[-1].end
                    for s in cfg.sites
                )
            ),
            "mes_counts": dict(sorted(self.mes.counts.items())),
            "defects": self.defects.counts(),
            "drop_files": self.drops.files,
        }
        # delivery faults are applied by `serve`; they change no generated file
        if cfg.faults:
            manifest["faults"] = cfg.faults
        tmp = self.out / ".world.json.part"
        tmp.write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        tmp.rename(self.out / "world.json")
        return manifest

    # ---- MES and truth per day ----------------------------------------------------------------
    def emit_mes(self, ev: DayEvents) -> None:
        """Write the day's states, confirmations, lots and consumptions (with defects) to the MES."""
        d = self.defects
        for iv in ev.intervals:
            m = iv.machine
            sim_seq = self.counters.get(f"ST-{m.code}", 0) + 1
            self.counters[f"ST-{m.code}"] = sim_seq
            state_id = f"{m.code}-{sim_seq:07d}"
            reason = REASONS.get(iv.reason) if iv.reason else None
            updated = iv.end + self.rec_delay()
            if d.hit("mes_out_of_order"):
                updated = iv.end + self.rng.randint(1800, 5400)
                d.record("mes_out_of_order", state_id)
            self.mes.add(
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
            updated = c.end + self.rec_delay()
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
                updated = c.end + self.rng.randint(1800, 6600)
                rec["updated_at"] = iso(updated)
                d.record("mes_late", c.confirmation_id)
            self.mes.add("confirmations", rec, updated)
            if not c.quarantined and d.hit("mes_duplicate"):
                dup_at = updated + self.rng.randint(60, 3600)
                self.mes.add(
                    "confirmations", {**rec, "updated_at": iso(dup_at)}, dup_at
                )
                d.record("mes_duplicate", c.confirmation_id)
        for lot, c in ev.produced_lots:
            updated = c.end + self.rec_delay()
            self.mes.add(
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
            mat = self.cfg.material(k.material)
            updated = k.conf.end + self.rec_delay()
            item, qty, unit = mat.mes_item, k.qty, mat.unit
            if d.hit("mes_orphan"):
                item = "RM-XX-999"
                k.quarantined = True
                d.record("mes_orphan", k.consumption_id)
            elif unit == "kg" and d.hit("mes_unit_mismatch"):
                qty, unit = round(k.qty * 1000, 3), "g"
                d.record("mes_unit_mismatch", k.consumption_id)
            self.mes.add(
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

    def emit_truth(self, ev: DayEvents) -> None:
        """ISO 22400 elements per machine × shift, production and FPY per line × day, genealogy."""
        for s in ev.shifts:
            self.truth.row(
                "shift_calendar",
                {
                    "site_code": s.site_code,
                    "production_date": s.production_date.isoformat(),
                    "shift_code": s.shift_code,
                    "shift_start_at": iso(s.start),
                    "shift_end_at": iso(s.end),
                    "shift_seconds": s.seconds,
                },
            )
        acc: dict[tuple[str, str], dict[str, float]] = {}
        for iv in ev.intervals:
            a = acc.setdefault((iv.machine.code, iv.shift.shift_code), {})
            a[iv.state] = a.get(iv.state, 0) + (iv.end - iv.start)
            rel = self.reliability[iv.machine.code]
            if iv.state == "running":
                rel[1] += iv.end - iv.start
            elif iv.state == "unplanned_downtime":
                rel[0] += 1
                rel[2] += iv.end - iv.start
        valid = [c for c in ev.confirmations if not c.quarantined]
        for c in valid:
            a = acc.setdefault((c.op.machine.code, c.shift.shift_code), {})
            a["pq"] = a.get("pq", 0) + c.produced
            a["gq"] = a.get("gq", 0) + c.good
            a["sq"] = a.get("sq", 0) + c.scrap
            a["rq"] = a.get("rq", 0) + c.rework
            a["pri"] = a.get("pri", 0.0) + c.op.ideal_cycle * c.produced
        for m in (m for m in self.cfg.machines if m.site_code == ev.site.code):
            day = [0, 0, 0.0, 0, 0, 0, 0]  # pbt, apt, pri, pq, gq, sq, rq
            for s in ev.shifts:
                a = acc.get((m.code, s.shift_code), {})
                pdt = int(a.get("planned_downtime", 0))
                pbt = s.seconds - pdt
                apt = int(a.get("running", 0))
                pri = float(a.get("pri", 0.0))
                pq, gq = int(a.get("pq", 0)), int(a.get("gq", 0))
                for i, v in enumerate(
                    (pbt, apt, pri, pq, gq, int(a.get("sq", 0)), int(a.get("rq", 0)))
                ):
                    day[i] += v
                avail = apt / pbt if pbt else None
                eff = pri / apt if apt else None
                qual = gq / pq if pq else None
                oee = avail * eff * qual if None not in (avail, eff, qual) else 0.0
                self.truth.row(
                    "oee_machine_shift",
                    {
                        "site_code": m.site_code,
                        "line_code": m.line_code,
                        "machine_code": m.code,
                        "production_date": s.production_date.isoformat(),
                        "shift_code": s.shift_code,
                        "shift_start_at": iso(s.start),
                        "shift_end_at": iso(s.end),
                        "pbt_seconds": pbt,
                        "apt_seconds": apt,
                        "pri_seconds": round(pri, 6),
                        "pq": pq,
                        "gq": gq,
                        "sq": int(a.get("sq", 0)),
                        "rq": int(a.get("rq", 0)),
                        "setup_seconds": int(a.get("setup", 0)),
                        "idle_seconds": int(a.get("idle", 0)),
                        "planned_downtime_seconds": pdt,
                        "unplanned_downtime_seconds": int(
                            a.get("unplanned_downtime", 0)
                        ),
                        "availability": avail,
                        "effectiveness": eff,
                        "quality_ratio": qual,
                        "oee": oee,
                    },
                )
            self._machine_day(m, ev.day, day)
        line_day: dict[str, list[int]] = {}
        for c in valid:
            t = line_day.setdefault(c.op.machine.line_code, [0, 0, 0])
            t[0] += c.good
            t[1] += c.scrap
            t[2] += c.rework
        for line in (ln for ln in self.cfg.lines if ln.site_code == ev.site.code):
            g, s_, r = line_day.get(line.code, [0, 0, 0])
            base = {
                "site_code": ev.site.code,
                "line_code": line.code,
                "production_date": ev.day.isoformat(),
            }
            self.truth.row(
                "production_line_day",
                {**base, "good_qty": g, "scrap_qty": s_, "rework_qty": r},
            )
            pq = g + s_ + r
            self.truth.row(
                "fpy_line_day",
                {
                    **base,
                    "produced_qty": pq,
                    "first_pass_good_qty": g,
                    "fpy": g / pq if pq else None,
                },
            )
        edges: dict[tuple[str, str], list[Any]] = {}
        for k in ev.consumptions:
            if k.quarantined or k.produced_lot_id is None:
                continue
            key = (k.lot_id, k.produced_lot_id)
            e = edges.get(key)
            if e is None:
                edges[key] = [
                    k.material,
                    k.conf.op.wo.product.erp_material,
                    k.qty,
                    self.cfg.material(k.material).unit,
                ]
            else:
                e[2] = round(e[2] + k.qty, 3)
        for (parent, child), (pm, cm, qty, unit) in edges.items():
            self.truth.row(
                "genealogy_edges",
                {
                    "parent_lot_id": parent,
                    "child_lot_id": child,
                    "parent_material_number": pm,
                    "child_material_number": cm,
                    "qty": qty,
                    "unit": unit,
                },
            )

    def _machine_day(self, m: Machine, day: dt.date, v: list[Any]) -> None:
        """ISO 22400 elements and KPIs per machine × production date (sum of its shifts)."""
        pbt, apt, pri, pq, gq, sq, rq = v
        avail = apt / pbt if pbt else None
        eff = pri / apt if apt else None
        qual = gq / pq if pq else None
        self.truth.row(
            "oee_machine_day",
            {
                "site_code": m.site_code,
                "line_code": m.line_code,
                "machine_code": m.code,
                "production_date": day.isoformat(),
                "pbt_seconds": pbt,
                "apt_seconds": apt,
                "pri_seconds": round(pri, 6),
                "pq": pq,
                "gq": gq,
                "sq": sq,
                "rq": rq,
                "availability": avail,
                "effectiveness": eff,
                "quality_ratio": qual,
                "oee": avail * eff * qual if None not in (avail, eff, qual) else 0.0,
            },
        )

    def emit_reliability(self) -> None:
        """MTBF / MTTR per machine over the whole world."""
        for m in self.cfg.machines:
            n, run, down = self.reliability[m.code]
            self.truth.row(
                "reliability_machine",
                {
                    "site_code": m.site_code,
                    "line_code": m.line_code,
                    "machine_code": m.code,
                    "failure_count": n,
                    "running_seconds": run,
                    "unplanned_downtime_seconds": down,
                    "mtbf_seconds": run / n if n else None,
                    "mttr_seconds": down / n if n else None,
                },
            )


def generate_world(cfg: Config, seed: int, out: Path) -> dict[str, Any]:
    """Generate a world folder at `out` (replacing generated files) and return its manifest."""
    from plant_sim.systems import registry

    out.mkdir(parents=True, exist_ok=True)
    # world.json is written last: without it a half-generated (interrupted) world is not used
    (out / "world.json").unlink(missing_ok=True)
    for sub in GENERATED:
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
    gen = WorldGen(cfg, seed, out, registry.all_systems())
    return gen.generate()
