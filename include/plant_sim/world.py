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
from plant_sim.systems import mes, truth
from plant_sim.systems.mes import ENTITIES, FeedStore
from plant_sim.timeutil import iso
from plant_sim.truth import TruthWriter

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

    def op_started(self, op: Operation, t: int) -> None:
        """An operation's first activity on its machine."""
        op.start = t
        mes.operation_record(self, op, "in_progress", t + self.rec_delay())
        wo = op.wo
        if wo.start is None:
            wo.start = t
            mes.work_order_record(self, wo, "in_progress", t + self.rec_delay())

    def op_completed(self, op: Operation, t: int) -> None:
        """An operation produced its planned quantity."""
        op.end = t
        mes.operation_record(self, op, "completed", t + self.rec_delay())
        wo = op.wo
        wo.done_ops += 1
        if wo.done_ops == len(wo.ops):
            wo.end = t
            mes.work_order_record(self, wo, "completed", t + self.rec_delay())

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
            n_orders = r.randint(*self.cfg.orders_per_line_day)
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
                mes.work_order_record(self, wo, "released", released + r.randint(1, 30))
                for op in wo.ops:
                    mes.operation_record(self, op, "released", released + r.randint(1, 30))
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
                mes.emit_day(self, ev)
                truth.emit_day(self, ev)
                for system in self.systems:
                    system.day(self, ev)
                self.mes.flush()
        for system in self.systems:
            system.finish(self)
        truth.emit_reliability(self)
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
