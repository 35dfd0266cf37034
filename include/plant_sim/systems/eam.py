"""EAM / CMMS: its own Postgres database (`eam`, schema `eam`): the equipment register with the
ISA-95 hierarchy, maintenance orders (preventive and corrective) and failures.

EAM timestamps are `timestamptz` (UTC). Each failure is one MES unplanned-downtime interval
(same machine, `started_at` = MES `start_at`, `ended_at` = MES `end_at`, failure code = reason code).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from plant_sim.reasons import REASONS
from plant_sim.tables import Spec, TableWriter

V = ("_visible_at", "timestamptz")

SPEC: Spec = {
    "equipment": [
        ("equipment_id", "text"),
        ("equipment_code", "text"),
        ("parent_equipment_id", "text"),
        ("hierarchy_level", "text"),
        ("name_en", "text"),
        ("name_zh", "text"),
        ("site_code", "text"),
        ("machine_type", "text"),
        ("manufacturer", "text"),
        ("commissioned_on", "date"),
        V,
    ],
    "failures": [
        ("failure_id", "text"),
        ("equipment_id", "text"),
        ("failure_code", "text"),
        ("failure_text_en", "text"),
        ("failure_text_zh", "text"),
        ("started_at", "timestamptz"),
        ("ended_at", "timestamptz"),
        ("reported_at", "timestamptz"),
        V,
    ],
    "maintenance_orders": [
        ("order_id", "text"),
        ("equipment_id", "text"),
        ("order_type", "text"),
        ("failure_id", "text"),
        ("description_en", "text"),
        ("description_zh", "text"),
        ("planned_start_at", "timestamptz"),
        ("actual_start_at", "timestamptz"),
        ("actual_end_at", "timestamptz"),
        ("status", "text"),
        V,
    ],
}
KEYS = {
    "equipment": "equipment_id",
    "failures": "failure_id",
    "maintenance_orders": "order_id",
}


def _ts(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EamSystem:
    """Writes the EAM tables (`<world>/eam/<table>.csv`)."""

    name = "eam"

    def start(self, gen: Any) -> None:
        self.w = TableWriter(gen.out / "eam", SPEC)
        cfg = gen.cfg
        vis = _ts(gen.erp.t_master)
        self.eq: dict[str, str] = {}
        n = 100000

        def add(
            code: str,
            parent: str | None,
            level: str,
            en: str,
            zh: str,
            site: str,
            mtype: str | None = None,
            maker: str | None = None,
        ) -> str:
            nonlocal n
            n += 1
            eid = f"EQ-{n}"
            self.eq[code] = eid
            self.w.row(
                "equipment",
                {
                    "equipment_id": eid,
                    "equipment_code": code,
                    "parent_equipment_id": parent,
                    "hierarchy_level": level,
                    "name_en": en,
                    "name_zh": zh,
                    "site_code": site,
                    "machine_type": mtype,
                    "manufacturer": maker,
                    "commissioned_on": "2019-05-01" if level == "machine" else None,
                    "_visible_at": vis,
                },
            )
            return eid

        ent = add(
            "ENT", None, "enterprise", "Huaxin Precision Group", "华信精密集团", "*"
        )
        for s in cfg.sites:
            sid = add(s.code, ent, "site", s.name_en, s.name_zh, s.code)
            areas: dict[str, str] = {}
            for line in (ln for ln in cfg.lines if ln.site_code == s.code):
                if line.area_code not in areas:
                    areas[line.area_code] = add(
                        line.area_code,
                        sid,
                        "area",
                        f"Area {line.area_code}",
                        f"区域{line.area_code}",
                        s.code,
                    )
                lid = add(
                    line.code,
                    areas[line.area_code],
                    "line",
                    line.name_en,
                    line.name_zh,
                    s.code,
                )
                for m in line.machines:
                    maker = {
                        "CNC": "DMG Mori",
                        "MOLD": "Haitian 海天",
                        "PRESS": "Schuler",
                    }.get(m.machine_type, "Bosch Rexroth")
                    add(
                        m.code,
                        lid,
                        "machine",
                        m.name_en,
                        m.name_zh,
                        s.code,
                        m.machine_type,
                        maker,
                    )
        self.fseq = 0
        self.oseq = 0

    def day(self, gen: Any, ev: Any) -> None:
        pm_seen: set[tuple[str, int]] = set()
        for iv in sorted(ev.intervals, key=lambda iv: (iv.start, iv.machine.code)):
            eid = self.eq[iv.machine.code]
            if iv.state == "unplanned_downtime":
                self.fseq += 1
                self.oseq += 1
                fid = f"F{self.fseq:08d}"
                _s, en, zh = REASONS[iv.reason]
                self.w.row(
                    "failures",
                    {
                        "failure_id": fid,
                        "equipment_id": eid,
                        "failure_code": iv.reason,
                        "failure_text_en": en,
                        "failure_text_zh": zh,
                        "started_at": _ts(iv.start),
                        "ended_at": _ts(iv.end),
                        "reported_at": _ts(iv.start + 120),
                        "_visible_at": _ts(iv.end + 600),
                    },
                )
                self.w.row(
                    "maintenance_orders",
                    {
                        "order_id": f"MO{self.oseq:08d}",
                        "equipment_id": eid,
                        "order_type": "CM",
                        "failure_id": fid,
                        "description_en": f"Repair: {en}",
                        "description_zh": f"维修：{zh}",
                        "planned_start_at": None,
                        "actual_start_at": _ts(iv.start + 120),
                        "actual_end_at": _ts(iv.end),
                        "status": "closed",
                        "_visible_at": _ts(iv.end + 600),
                    },
                )
            elif iv.reason == "PM" and (iv.machine.code, iv.start) not in pm_seen:
                pm_seen.add((iv.machine.code, iv.start))
                self.oseq += 1
                self.w.row(
                    "maintenance_orders",
                    {
                        "order_id": f"MO{self.oseq:08d}",
                        "equipment_id": eid,
                        "order_type": "PM",
                        "failure_id": None,
                        "description_en": "Weekly preventive maintenance",
                        "description_zh": "每周预防性维护",
                        "planned_start_at": _ts(iv.start),
                        "actual_start_at": _ts(iv.start),
                        "actual_end_at": _ts(iv.end),
                        "status": "closed",
                        "_visible_at": _ts(iv.start - 3 * 86400),
                    },
                )

    def finish(self, gen: Any) -> None:
        self.w.close()
