"""Truth: what really happened, per day — ISO 22400 elements and KPIs per machine × shift and
× day, production and FPY per line × day, lot genealogy — and MTBF/MTTR per machine at the end.

The rows go through the world's `TruthWriter` (plant_sim/truth.py: the tables' files and their
load). Other systems add their own truth rows (EAM, SCADA/EMS, QMS).
`world` is the generator (plant_sim.world.WorldGen), `ev` its day's events (DayEvents).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from plant_sim.timeutil import iso


def emit_day(world: Any, ev: Any) -> None:
    """ISO 22400 elements per machine × shift, production and FPY per line × day, genealogy."""
    for s in ev.shifts:
        world.truth.row(
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
        rel = world.reliability[iv.machine.code]
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
    for m in (m for m in world.cfg.machines if m.site_code == ev.site.code):
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
            world.truth.row(
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
        _machine_day(world, m, ev.day, day)
    line_day: dict[str, list[int]] = {}
    for c in valid:
        t = line_day.setdefault(c.op.machine.line_code, [0, 0, 0])
        t[0] += c.good
        t[1] += c.scrap
        t[2] += c.rework
    for line in (ln for ln in world.cfg.lines if ln.site_code == ev.site.code):
        g, s_, r = line_day.get(line.code, [0, 0, 0])
        base = {
            "site_code": ev.site.code,
            "line_code": line.code,
            "production_date": ev.day.isoformat(),
        }
        world.truth.row(
            "production_line_day",
            {**base, "good_qty": g, "scrap_qty": s_, "rework_qty": r},
        )
        pq = g + s_ + r
        world.truth.row(
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
                world.cfg.material(k.material).unit,
            ]
        else:
            e[2] = round(e[2] + k.qty, 3)
    for (parent, child), (pm, cm, qty, unit) in edges.items():
        world.truth.row(
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


def _machine_day(world: Any, m: Any, day: dt.date, v: list[Any]) -> None:
    """ISO 22400 elements and KPIs per machine × production date (sum of its shifts)."""
    pbt, apt, pri, pq, gq, sq, rq = v
    avail = apt / pbt if pbt else None
    eff = pri / apt if apt else None
    qual = gq / pq if pq else None
    world.truth.row(
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


def emit_reliability(world: Any) -> None:
    """MTBF / MTTR per machine over the whole world."""
    for m in world.cfg.machines:
        n, run, down = world.reliability[m.code]
        world.truth.row(
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
