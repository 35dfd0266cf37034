"""The shop floor's own signals: what the machines' controllers say, for OPC UA, MQTT and Modbus.

Rendered from the same machine intervals the MES and the historian come from, into
`<world>/shopfloor/shopfloor.sqlite`:

- `equipment`: the ISA-95 path of every machine (enterprise → site → area → line → machine) and
  its PLC (one per line: Modbus device id, register block of the machine).
- `points`: per tag (`<machine>.<Tag>`) its value changes, `(node, ts_ms)`: `State`,
  `ReasonCode`, `OperationId`, `Speed` at every MES state interval's start; `GoodCount`,
  `ScrapCount`, `ReworkCount`, `TotalCount` at every piece (cumulative since the world start, a
  piece counted at the instant it completes, as the historian's `counter`); `Temperature` every
  minute (with an OPC UA status code: a `opcua_bad_quality` defect marks 5 samples bad).
- `mqtt`: the machine events as published, in publish order (`publish_ms`, `seq`), each with its
  id, machine, kind and the kind's JSON members (`payload()` makes the message): one message
  per state interval (`state`), per piece (`counter`), per unplanned stop raised/cleared
  (`alarm`); defects `mqtt_duplicate` (the same message again, 1–30 s later) and
  `mqtt_out_of_order` (published after the machine's next three events, when they
  follow within 10 minutes).
- `mqtt_actions`: planned `reconnect` (the publisher drops its connection for a while) and
  `broker_restart` instants.
- `plc_counters`: the preset each PLC counter started from, so that it rolls over (2^32) inside
  the world (`modbus_counter_rollover`).

Which pieces of a confirmation are good, scrap or rework is drawn per confirmation (seeded), so
each counter's delta over a confirmation's segment equals the confirmation. Truth:
`machine_counter_shift` (physical counts per machine × shift: the quarantined MES confirmations'
pieces were made too) and `plc_counters`.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from plant_sim import rng as rngmod
from plant_sim.timeutil import iso

ENTERPRISE = "ENT"
"""The enterprise's equipment code (as in the EAM's hierarchy): the UNS topic root."""
COUNTERS = ("GoodCount", "ScrapCount", "ReworkCount", "TotalCount")
STATE_CODES = {
    "running": 1,
    "idle": 2,
    "setup": 3,
    "planned_downtime": 4,
    "unplanned_downtime": 5,
}
REASON_CODES = {
    "NO_ORDER": 1,
    "WAIT_MAT": 2,
    "CHANGEOVER": 3,
    "BREAK": 4,
    "PM": 5,
    "MECH": 6,
    "ELEC": 7,
    "TOOL": 8,
    "JAM": 9,
}
TEMPERATURE = {
    "running": 62.0,
    "setup": 45.0,
    "idle": 38.0,
    "planned_downtime": 30.0,
    "unplanned_downtime": 33.0,
}
GOOD = 0
BAD_SENSOR_FAILURE = 0x808C0000
"""OPC UA StatusCode BadSensorFailure (Part 4), on samples hit by `opcua_bad_quality`."""
ROLLOVER = 1 << 32
OUT_OF_ORDER_MAX_MS = 600_000
"""An out-of-order message is at most 10 plant minutes late (its next three events are near)."""
DB = Path("shopfloor") / "shopfloor.sqlite"

SCHEMA = (
    (
        "CREATE TABLE equipment (machine_code TEXT PRIMARY KEY, line_code TEXT, "
        "area_code TEXT, site_code TEXT, enterprise TEXT, machine_type TEXT, name_en TEXT, "
        "name_zh TEXT, plc_device_id INTEGER, plc_block INTEGER)"
    ),
    (
        "CREATE TABLE points (node TEXT NOT NULL, ts_ms INTEGER NOT NULL, num REAL, txt TEXT, "
        "status INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (node, ts_ms)) WITHOUT ROWID"
    ),
    (
        "CREATE TABLE mqtt (seq INTEGER PRIMARY KEY, publish_ms INTEGER NOT NULL, "
        "message_id TEXT NOT NULL, machine_code TEXT NOT NULL, kind TEXT NOT NULL, "
        "body TEXT NOT NULL, event_ms INTEGER NOT NULL, defect TEXT)"
    ),
    (
        "CREATE TABLE mqtt_actions (at_ms INTEGER NOT NULL, action TEXT NOT NULL, "
        "seconds INTEGER NOT NULL)"
    ),
    (
        "CREATE TABLE plc_counters (machine_code TEXT, counter TEXT, preset INTEGER, "
        "rollover_at_ms INTEGER, PRIMARY KEY (machine_code, counter))"
    ),
)


def iso_ms(ms: int) -> str:
    """UTC ISO 8601 with milliseconds and `Z`: `2026-10-24T04:00:48.500Z`."""
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
        + f".{ms % 1000:03d}Z"
    )


def _js(text: str | None) -> str:
    """A code (plain ASCII, no quotes) or None as a JSON value."""
    return "null" if text is None else f'"{text}"'


def payload(message_id: str, event_ms: int, machine: str, kind: str, body: str) -> str:
    """The message's JSON: id, event time, machine, kind, then the kind's members."""
    return (
        f'{{"message_id":"{message_id}","event_time":"{iso_ms(event_ms)}",'
        f'"machine_code":"{machine}","kind":"{kind}",{body}}}'
    )


def topic(eq: dict[str, Any], kind: str) -> str:
    """The unified-namespace topic `<enterprise>/<site>/<area>/<line>/<machine>/<kind>`."""
    return "/".join(
        (
            eq["enterprise"],
            eq["site_code"],
            eq["area_code"],
            eq["line_code"],
            eq["machine_code"],
            kind,
        )
    )


class ShopfloorSystem:
    """Renders each site-day's machine intervals to the shop floor's signals (see module doc)."""

    name = "shopfloor"

    def start(self, gen: Any) -> None:
        path = gen.out / DB
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=OFF")
        self.conn.execute("PRAGMA synchronous=OFF")
        for stmt in SCHEMA:
            self.conn.execute(stmt)
        self.eq: dict[str, dict[str, Any]] = {}
        for dev, line in enumerate(gen.cfg.lines, start=1):
            for m in line.machines:
                self.eq[m.code] = {
                    "machine_code": m.code,
                    "line_code": m.line_code,
                    "area_code": m.area_code,
                    "site_code": m.site_code,
                    "enterprise": ENTERPRISE,
                    "machine_type": m.machine_type,
                    "name_en": m.name_en,
                    "name_zh": m.name_zh,
                    "plc_device_id": dev,
                    "plc_block": m.index - 1,
                }
        cols = list(next(iter(self.eq.values())))
        self.conn.executemany(
            f"INSERT INTO equipment VALUES ({', '.join('?' * len(cols))})",
            [[e[c] for c in cols] for e in self.eq.values()],
        )
        self.counts: dict[str, dict[str, int]] = {
            code: dict.fromkeys(COUNTERS, 0) for code in self.eq
        }
        self.msg_seq: dict[str, int] = defaultdict(int)
        self.seq = 0
        self.defects: list[tuple[str, str, str | None]] = []  # recorded in finish()

    # ---- one site-day -----------------------------------------------------------------------
    def day(self, gen: Any, ev: Any) -> None:
        by_m: dict[str, list[Any]] = defaultdict(list)
        for iv in ev.intervals:
            by_m[iv.machine.code].append(iv)
        labels = self._labels(gen, ev)
        points: list[tuple[str, int, float | None, str | None, int]] = []
        per_shift: dict[tuple[str, int], list[int]] = {}
        for code in sorted(by_m):
            ivs = sorted(by_m[code], key=lambda iv: iv.start)
            events = self._machine_day(gen, code, ivs, labels, points, per_shift)
            self._plan_messages(gen, code, events)
            self._temperature(gen, code, ivs, points)
        points.sort()  # B-tree order: a machine's tags are contiguous
        self.conn.executemany("INSERT INTO points VALUES (?, ?, ?, ?, ?)", points)
        for s in ev.shifts:
            for m in (m for m in gen.cfg.machines if m.site_code == ev.site.code):
                g, sc, rw, c0, c1 = per_shift.get(
                    (m.code, s.start), [0, 0, 0, None, None]
                )
                gen.truth.row(
                    "machine_counter_shift",
                    {
                        "site_code": m.site_code,
                        "line_code": m.line_code,
                        "machine_code": m.code,
                        "production_date": s.production_date.isoformat(),
                        "shift_code": s.shift_code,
                        "shift_start_at": iso(s.start),
                        "shift_end_at": iso(s.end),
                        "good_count": g,
                        "scrap_count": sc,
                        "rework_count": rw,
                        "total_count_start": c0,
                        "total_count_end": c1,
                    },
                )
        self._actions(gen, ev)
        self.conn.commit()

    def _labels(self, gen: Any, ev: Any) -> dict[tuple[str, int], list[str]]:
        """(operation, shift start) → the result of each produced piece, in production order."""
        out: dict[tuple[str, int], list[str]] = {}
        for c in ev.confirmations:
            lab = ["good"] * c.good + ["scrap"] * c.scrap + ["rework"] * c.rework
            rngmod.stream(gen.seed, "shopfloor-pieces", c.confirmation_id).shuffle(lab)
            out[(c.op.operation_id, c.shift.start)] = lab
        return out

    def _machine_day(
        self,
        gen: Any,
        code: str,
        ivs: list[Any],
        labels: dict[tuple[str, int], list[str]],
        points: list[Any],
        per_shift: dict[tuple[str, int], list[int]],
    ) -> list[tuple[int, str, str]]:
        """State and counter points of one machine-day; returns its events for MQTT
        (plant ms, kind, the payload's kind-specific JSON members)."""
        cnt = self.counts[code]
        taken: dict[tuple[str, int], int] = defaultdict(int)
        events: list[tuple[int, str, str]] = []
        for iv in ivs:
            ms = iv.start * 1000
            speed = round(3600.0 / iv.cycle, 3) if iv.state == "running" else 0.0
            op = iv.op.operation_id if iv.op else None
            points.append((f"{code}.State", ms, None, iv.state, GOOD))
            points.append((f"{code}.ReasonCode", ms, None, iv.reason or "", GOOD))
            points.append((f"{code}.OperationId", ms, None, op or "", GOOD))
            points.append((f"{code}.Speed", ms, speed, None, GOOD))
            acc = per_shift.setdefault((code, iv.shift.start), [0, 0, 0, None, None])
            if acc[3] is None:
                acc[3] = cnt["TotalCount"]
            events.append(
                (
                    ms,
                    "state",
                    (
                        f'"state":"{iv.state}","state_code":{STATE_CODES[iv.state]},'
                        f'"reason_code":{_js(iv.reason)},"operation_id":{_js(op)}'
                    ),
                )
            )
            if iv.state == "unplanned_downtime":
                alarm = f'"alarm_code":"ALM-{iv.reason}","priority":"HIGH"'
                events.append((ms, "alarm", alarm + ',"event":"raised"'))
                events.append((iv.end * 1000, "alarm", alarm + ',"event":"cleared"'))
            key = (op or "", iv.shift.start)
            lab = labels.get(key, [])
            for k in range(1, iv.pieces + 1):
                t = iv.start + k * iv.cycle
                pms = min(iv.end * 1000, max(ms + 1, round(t * 1000)))
                result = lab[taken[key]]
                taken[key] += 1
                name = {"good": "GoodCount", "scrap": "ScrapCount"}.get(
                    result, "ReworkCount"
                )
                cnt[name] += 1
                cnt["TotalCount"] += 1
                acc[("good", "scrap", "rework").index(result)] += 1
                points.append((f"{code}.{name}", pms, float(cnt[name]), None, GOOD))
                points.append(
                    (f"{code}.TotalCount", pms, float(cnt["TotalCount"]), None, GOOD)
                )
                events.append(
                    (
                        pms,
                        "counter",
                        (
                            f'"counter":"{result}","increment":1,"value":{cnt[name]},'
                            f'"total":{cnt["TotalCount"]},"operation_id":{_js(op)}'
                        ),
                    )
                )
            acc[4] = cnt["TotalCount"]
        events.sort(key=lambda e: e[0])
        return events

    def _plan_messages(
        self, gen: Any, code: str, events: list[tuple[int, str, str]]
    ) -> None:
        r = rngmod.stream(
            gen.seed, "shopfloor-mqtt", code, events[0][0] if events else 0
        )
        rows: list[tuple[Any, ...]] = []
        for i, (ms, kind, body) in enumerate(events):
            self.msg_seq[code] += 1
            mid = f"{code}-{self.msg_seq[code]:08d}"
            publish, defect = ms, None
            late = (
                i + 3 < len(events) and 0 < events[i + 3][0] - ms <= OUT_OF_ORDER_MAX_MS
            )
            if late and gen.defects.hit("mqtt_out_of_order"):
                publish, defect = events[i + 3][0] + 1, "mqtt_out_of_order"
                self.defects.append(
                    ("mqtt_out_of_order", mid, f"published {iso_ms(publish)}")
                )
            self.seq += 1
            rows.append((self.seq, publish, mid, code, kind, body, ms, defect))
            if defect is None and gen.defects.hit("mqtt_duplicate"):
                again = publish + r.randint(1000, 30000)
                self.seq += 1
                rows.append(
                    (self.seq, again, mid, code, kind, body, ms, "mqtt_duplicate")
                )
                self.defects.append(
                    ("mqtt_duplicate", mid, f"published again {iso_ms(again)}")
                )
        self.conn.executemany("INSERT INTO mqtt VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _temperature(
        self, gen: Any, code: str, ivs: list[Any], points: list[Any]
    ) -> None:
        """A sample every minute from the first interval's start; 5 bad ones on a hit."""
        r = rngmod.stream(gen.seed, "shopfloor-temp", code, ivs[0].start)
        t0, t1 = ivs[0].start, ivs[-1].end
        n = (t1 - t0) // 60
        bad: set[int] = set()
        if gen.defects.hit("opcua_bad_quality"):
            first = r.randrange(max(1, n - 5))
            bad = set(range(first, first + 5))
            self.defects.append(
                (
                    "opcua_bad_quality",
                    f"{code}|Temperature|{iso(t0 + 60 * first)}",
                    f"5 samples BadSensorFailure from {iso(t0 + 60 * first)}",
                )
            )
        i = 0
        for k in range(n):
            t = t0 + 60 * k
            while ivs[i].end <= t:
                i += 1
            value = round(TEMPERATURE[ivs[i].state] + (r.random() - 0.5) * 1.2, 2)
            status = BAD_SENSOR_FAILURE if k in bad else GOOD
            points.append((f"{code}.Temperature", t * 1000, value, None, status))

    def _actions(self, gen: Any, ev: Any) -> None:
        """Planned publisher reconnects and broker restarts (one site-day is eligible)."""
        r = rngmod.stream(
            gen.seed, "shopfloor-actions", ev.site.code, ev.day.isoformat()
        )
        t0, t1 = ev.shifts[0].start, ev.shifts[-1].end
        for kind, action, lo, hi in (
            ("mqtt_reconnect", "reconnect", 20, 120),
            ("mqtt_broker_restart", "broker_restart", 0, 0),
        ):
            at = r.randrange(t0 + 3600, t1 - 3600)
            seconds = r.randint(lo, hi)
            if gen.defects.hit(kind):
                self.conn.execute(
                    "INSERT INTO mqtt_actions VALUES (?, ?, ?)",
                    (at * 1000, action, seconds),
                )
                self.defects.append(
                    (kind, f"{ev.site.code}|{iso(at)}", f"{action} at {iso(at)}")
                )

    # ---- the end: counter presets and the defects' truth rows --------------------------------
    def finish(self, gen: Any) -> None:
        rows = []
        for code in sorted(self.eq):
            r = rngmod.stream(gen.seed, "shopfloor-plc", code)
            for name in COUNTERS:
                total = self.counts[code][name]
                preset, wrap_ms = 0, None
                if total >= 2 and gen.defects.hit("modbus_counter_rollover"):
                    # wraps after between 20 % and 80 % of the machine's pieces
                    at = max(1, math.floor(total * r.uniform(0.2, 0.8)))
                    preset = ROLLOVER - at
                    wrap_ms = self.conn.execute(
                        "SELECT ts_ms FROM points WHERE node = ? AND num = ?",
                        (f"{code}.{name}", float(at)),
                    ).fetchone()[0]
                    self.defects.append(
                        (
                            "modbus_counter_rollover",
                            f"{code}|{name}|{iso_ms(wrap_ms)}",
                            (
                                f"32-bit counter preset {preset} rolls over to 0 at "
                                f"{iso_ms(wrap_ms)}"
                            ),
                        )
                    )
                rows.append((code, name, preset, wrap_ms))
                gen.truth.row(
                    "plc_counters",
                    {
                        "machine_code": code,
                        "counter": name,
                        "preset": preset,
                        "rollover_at": iso_ms(wrap_ms) if wrap_ms is not None else None,
                    },
                )
        self.conn.executemany("INSERT INTO plc_counters VALUES (?, ?, ?, ?)", rows)
        # built once at the end: faster than keeping it up to date row by row
        self.conn.execute("CREATE INDEX mqtt_publish ON mqtt (publish_ms, seq)")
        self.conn.commit()
        self.conn.close()
        for kind, record_id, detail in self.defects:
            gen.defects.record(kind, record_id=record_id, detail=detail)
