"""SCADA historian (hourly tag exports + alarms) and EMS (kWh per 15 min per machine meter).

Historian: one file per site and UTC hour, `ts;machine_code;tag;value;quality`, UTC `Z`, 1-minute
samples. The `counter` tag is the machine's cumulative piece counter (pieces completed at or before
the sample instant), so counter deltas over a shift equal the MES pieces of that shift.
EMS: one file per site and UTC hour, interval times in local time **with** offset, kWh per meter.
Energy is the state power (table below) integrated over the machine's state intervals.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from typing import Any

from plant_sim import rng as rngmod
from plant_sim.reasons import REASONS

POWER_KW = {
    "running": 18.0,
    "setup": 6.0,
    "idle": 3.5,
    "planned_downtime": 1.0,
    "unplanned_downtime": 1.5,
}
TYPE_POWER = {"CNC": 1.0, "MOLD": 1.6, "PRESS": 2.0, "ASSY": 0.4, "PACK": 0.5}
STD_TAGS = ("temperature", "pressure", "vibration", "power", "counter")
LEVELS = {
    # state: (temperature °C, pressure bar, vibration mm/s)
    "running": (62.0, 6.0, 2.2),
    "setup": (45.0, 2.0, 0.8),
    "idle": (38.0, 0.5, 0.2),
    "planned_downtime": (30.0, 0.2, 0.05),
    "unplanned_downtime": (33.0, 0.3, 0.1),
}


def _hour_name(prefix: str, site: str, hour: int) -> str:
    stamp = dt.datetime.fromtimestamp(hour, dt.UTC).strftime("%Y%m%dT%H%MZ")
    return f"{prefix}_{site}_{stamp}.csv"


class ScadaEmsSystem:
    """Renders each site-day's machine intervals to historian, alarm and meter files."""

    name = "scada"

    def start(self, gen: Any) -> None:
        self.counter: dict[str, int] = defaultdict(int)
        n = gen.cfg.scada_tags
        self.tags = list(STD_TAGS[: min(n, 5)]) + [
            f"aux_{i:02d}" for i in range(6, n + 1)
        ]
        self.energy: dict[tuple[str, str], float] = defaultdict(float)

    def day(self, gen: Any, ev: Any) -> None:
        site = ev.site
        machines = [m for m in gen.cfg.machines if m.site_code == site.code]
        by_m: dict[str, list[Any]] = defaultdict(list)
        for iv in ev.intervals:
            by_m[iv.machine.code].append(iv)
        for ivs in by_m.values():
            ivs.sort(key=lambda iv: iv.start)
        t0, t1 = ev.shifts[0].start, ev.shifts[-1].end
        r = rngmod.stream(gen.seed, "scada", site.code, ev.day.isoformat())
        # per machine: samples (state, counter) for every minute of the day
        samples: dict[str, list[tuple[str, int]]] = {}
        defects: dict[str, dict[str, Any]] = {}
        for m in machines:
            ivs = by_m[m.code]
            out: list[tuple[str, int]] = []
            i = 0
            cum = self.counter[m.code]
            for t in range(t0, t1, 60):
                while ivs[i].end <= t:
                    cum += ivs[i].pieces
                    i += 1
                iv = ivs[i]
                out.append((iv.state, cum + iv.completions_before(t)))
            for iv in ivs[i:]:
                cum += iv.pieces
            self.counter[m.code] = cum
            samples[m.code] = out
            defects[m.code] = self._pick_defects(gen, r, m.code, out, t0)
        hours = range(t0, t1, 3600)
        tagset = self.tags
        ptype = {m.code: TYPE_POWER.get(m.machine_type, 1.0) for m in machines}
        for h in hours:
            lines = ["ts;machine_code;tag;value;quality"]
            base = (h - t0) // 60
            stamps = [
                dt.datetime.fromtimestamp(h + 60 * k, dt.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                )
                for k in range(60)
            ]
            for m in machines:
                smp = samples[m.code]
                dfx = defects[m.code]
                rnd = random.Random(f"{gen.seed}|{m.code}|{h}").random
                pk = ptype[m.code]
                for k in range(60):
                    idx = base + k
                    if idx in dfx["gap"]:
                        continue
                    state, count = smp[idx]
                    temp, pres, vib = LEVELS[state]
                    vals = {
                        "temperature": temp + (rnd() - 0.5) * 1.2,
                        "pressure": pres + (rnd() - 0.5) * 0.1,
                        "vibration": vib * (0.9 + rnd() * 0.2),
                        "power": POWER_KW[state] * pk * (0.97 + rnd() * 0.06),
                    }
                    if idx in dfx["flat"]:
                        vals["vibration"] = dfx["flat_value"]
                    if idx == dfx["spike"]:
                        vals["temperature"] *= 20
                    ts = stamps[k]
                    for tag in tagset:
                        if tag == "counter":
                            lines.append(f"{ts};{m.code};counter;{count};GOOD")
                        elif tag in vals:
                            lines.append(f"{ts};{m.code};{tag};{vals[tag]:.3f};GOOD")
                        else:
                            lines.append(f"{ts};{m.code};{tag};{rnd() * 100:.3f};GOOD")
            name = _hour_name("SCADA_TAGS", site.code, h)
            gen.drops.path("scada", name).write_text(
                "\n".join(lines) + "\n", encoding="utf-8"
            )
            gen.drops.register("scada", name, h + 3600 + 120)
        self._alarms(gen, ev, by_m, machines, hours)
        self._ems(gen, ev, by_m, machines, hours, ptype)

    def _pick_defects(
        self, gen: Any, r: Any, code: str, smp: list[tuple[str, int]], t0: int
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "gap": set(),
            "flat": set(),
            "flat_value": 0.0,
            "spike": -1,
        }
        n = len(smp)
        iso_at = lambda idx: dt.datetime.fromtimestamp(t0 + 60 * idx, dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        if gen.defects.hit("scada_spike"):
            idx = r.randrange(n)
            out["spike"] = idx
            gen.defects.record(
                "scada_spike", record_id=f"{code}|temperature|{iso_at(idx)}"
            )
        if gen.defects.hit("scada_flatline"):
            running = [
                i for i, (s, _c) in enumerate(smp) if s == "running" and i + 30 < n
            ]
            start = (
                running[r.randrange(len(running))] if running else r.randrange(n - 30)
            )
            out["flat"] = set(range(start, start + 30))
            out["flat_value"] = round(2.2 * (0.9 + r.random() * 0.2), 3)
            gen.defects.record(
                "scada_flatline",
                record_id=f"{code}|vibration|{iso_at(start)}",
                detail=f"30 samples of {out['flat_value']} from {iso_at(start)}",
            )
        if gen.defects.hit("scada_gap"):
            hour = r.randrange(n // 60)
            start = hour * 60 + r.randint(10, 40)
            out["gap"] = set(range(start, start + 15))
            gen.defects.record(
                "scada_gap",
                record_id=f"{code}|*|{iso_at(start)}",
                detail=f"15 minutes of all tags missing from {iso_at(start)}",
            )
        return out

    def _alarms(
        self,
        gen: Any,
        ev: Any,
        by_m: dict[str, list[Any]],
        machines: list[Any],
        hours: range,
    ) -> None:
        per_hour: dict[int, list[str]] = defaultdict(list)
        for m in machines:
            for iv in by_m[m.code]:
                if iv.state == "unplanned_downtime":
                    _s, en, zh = REASONS[iv.reason]
                    raised = dt.datetime.fromtimestamp(iv.start, dt.UTC)
                    cleared = dt.datetime.fromtimestamp(iv.end, dt.UTC)
                    per_hour[iv.start - iv.start % 3600].append(
                        ";".join(
                            [
                                raised.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                cleared.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                m.code,
                                f"ALM-{iv.reason}",
                                en,
                                zh,
                                "HIGH",
                            ]
                        )
                    )
        for h in hours:
            name = _hour_name("SCADA_ALARMS", ev.site.code, h)
            rows = [
                "raised_at;cleared_at;machine_code;alarm_code;text_en;text_zh;priority",
                *per_hour.get(h, []),
            ]
            gen.drops.path("scada", name).write_text(
                "\n".join(rows) + "\n", encoding="utf-8"
            )
            gen.drops.register("scada", name, h + 3600 + 120)

    def _ems(
        self,
        gen: Any,
        ev: Any,
        by_m: dict[str, list[Any]],
        machines: list[Any],
        hours: range,
        ptype: dict[str, float],
    ) -> None:
        tz = ev.site.tz
        day_kwh: dict[str, float] = defaultdict(float)
        for h in hours:
            rows = ["meter_id;machine_code;interval_start;interval_end;kwh"]
            slot_values: list[tuple[str, float]] = []
            for m in machines:
                ivs = by_m[m.code]
                for q in range(4):
                    a, b = h + q * 900, h + (q + 1) * 900
                    kws = 0.0
                    for iv in ivs:
                        if iv.end <= a or iv.start >= b:
                            continue
                        kws += (
                            (min(b, iv.end) - max(a, iv.start))
                            * POWER_KW[iv.state]
                            * ptype[m.code]
                        )
                    kwh = round(kws / 3600, 3)
                    sa = dt.datetime.fromtimestamp(a, tz).isoformat()
                    sb = dt.datetime.fromtimestamp(b, tz).isoformat()
                    rows.append(f"EM-{m.code};{m.code};{sa};{sb};{kwh:.3f}")
                    slot_values.append((m.code, kwh))
            name = _hour_name("EMS_READINGS", ev.site.code, h)
            text = "\n".join(rows) + "\n"
            if gen.defects.hit("ems_malformed_file"):
                text = text[: len(text) - len(rows[-1]) // 2 - 1]
                gen.defects.record("ems_malformed_file", file_name=name)
            else:
                for code, kwh in slot_values:
                    day_kwh[code] += kwh
            gen.drops.path("ems", name).write_text(text, encoding="utf-8")
            gen.drops.register("ems", name, h + 3600 + 300)
        good: dict[str, int] = defaultdict(int)
        for c in ev.confirmations:
            if not c.quarantined:
                good[c.op.machine.code] += c.good
        for m in machines:
            kwh = round(day_kwh[m.code], 3)
            g = good[m.code]
            gen.truth.row(
                "energy_machine_day",
                {
                    "site_code": m.site_code,
                    "line_code": m.line_code,
                    "machine_code": m.code,
                    "production_date": ev.day.isoformat(),
                    "energy_kwh": kwh,
                    "good_qty": g,
                    "kwh_per_good_unit": kwh / g if g else None,
                },
            )

    def finish(self, gen: Any) -> None:
        return None
