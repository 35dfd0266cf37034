"""QMS: inspection lots for produced lots, results per characteristic, defects by code,
nonconformances and usage decisions, served over HTTP like the MES (own SQLite change feed).

Business timestamps (`created_at`, `measured_at`, `recorded_at`, `opened_at`, `decided_at`) are
**site-local wall time without offset** (`2026-10-25 02:30:00`), as the QMS stores them; only the
API's `updated_at` is UTC with `Z` (it drives the `updated_since` cursor).
"""

from __future__ import annotations

from typing import Any

from plant_sim import rng as rngmod
from plant_sim.calendar import shifts_for_day
from plant_sim.systems.mes import FeedStore
from plant_sim.timeutil import iso, local_naive

ENTITIES: dict[str, tuple[str, str]] = {
    "characteristics": ("characteristics", "characteristic_id"),
    "inspection-lots": ("inspection_lots", "inspection_lot_id"),
    "inspection-results": ("inspection_results", "result_id"),
    "defects": ("defects", "defect_record_id"),
    "nonconformances": ("nonconformances", "nc_id"),
    "usage-decisions": ("usage_decisions", "usage_decision_id"),
}

DEFECT_CODES: dict[str, tuple[str, str]] = {
    "D01": ("Dimension out of tolerance", "尺寸超差"),
    "D02": ("Surface scratch", "表面划伤"),
    "D03": ("Burr", "毛刺"),
    "D04": ("Porosity", "气孔"),
    "D05": ("Short shot", "缺料"),
}

CHARACTERISTICS: tuple[tuple[str, str, str, str, float, float], ...] = (
    # code, en, zh, unit, target, tolerance (±)
    ("C10", "Bore diameter", "孔径", "mm", 24.0, 0.05),
    ("C20", "Overall length", "总长", "mm", 120.0, 0.2),
    ("C30", "Part weight", "零件重量", "g", 350.0, 6.0),
)


class QmsSystem:
    """Writes the QMS change feed (`<world>/qms/qms.sqlite`)."""

    name = "qms"

    def start(self, gen: Any) -> None:
        self.store = FeedStore(gen.out / "qms" / "qms.sqlite", ENTITIES)
        self.seq = 0
        t0 = (
            min(
                shifts_for_day(s.code, gen.cfg.start_date, s.tz)[0].start
                for s in gen.cfg.sites
            )
            - 86400
        )
        for p in gen.cfg.products:
            for code, en, zh, unit, target, tol in CHARACTERISTICS:
                self.store.add(
                    "characteristics",
                    {
                        "characteristic_id": f"{p.erp_material}-{code}",
                        "material_number": p.erp_material,
                        "characteristic_code": code,
                        "name_en": en,
                        "name_zh": zh,
                        "unit": unit,
                        "target": target,
                        "lower_spec_limit": round(target - tol, 4),
                        "upper_spec_limit": round(target + tol, 4),
                        "updated_at": iso(t0),
                    },
                    t0,
                )

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}{self.seq:09d}"

    def day(self, gen: Any, ev: Any) -> None:
        tz = ev.site.tz
        r = rngmod.stream(gen.seed, "qms", ev.site.code, ev.day.isoformat())
        for lot, c in ev.produced_lots:
            mat = c.op.wo.product.erp_material
            created = c.end + 300
            il = self._id("IL")
            self.store.add(
                "inspection-lots",
                {
                    "inspection_lot_id": il,
                    "lot_id": lot,
                    "material_number": mat,
                    "site_code": ev.site.code,
                    "machine_code": c.op.machine.code,
                    "lot_qty": c.good,
                    "sample_size": 5,
                    "created_at": local_naive(created, tz),
                    "updated_at": iso(created + 30),
                },
                created + 30,
            )
            out_of_spec = 0
            measured = created + 600
            for code, _en, _zh, unit, target, tol in CHARACTERISTICS:
                for sample in range(1, 6):
                    value = round(r.gauss(target, tol / 3.2), 4)
                    ok = target - tol <= value <= target + tol
                    out_of_spec += not ok
                    rid = self._id("IR")
                    self.store.add(
                        "inspection-results",
                        {
                            "result_id": rid,
                            "inspection_lot_id": il,
                            "characteristic_id": f"{mat}-{code}",
                            "sample_no": sample,
                            "value": value,
                            "unit": unit,
                            "in_spec": ok,
                            "measured_at": local_naive(measured, tz),
                            "updated_at": iso(measured + 60),
                        },
                        measured + 60,
                    )
            decided = measured + 1800
            if out_of_spec:
                nc = self._id("NC")
                self.store.add(
                    "nonconformances",
                    {
                        "nc_id": nc,
                        "inspection_lot_id": il,
                        "lot_id": lot,
                        "severity": "major" if out_of_spec > 1 else "minor",
                        "description_en": f"{out_of_spec} sample value(s) out of specification",
                        "description_zh": f"{out_of_spec}个样本值超出规格",
                        "opened_at": local_naive(measured + 120, tz),
                        "status": "open",
                        "updated_at": iso(measured + 180),
                    },
                    measured + 180,
                )
            decision = (
                "ACCEPT"
                if out_of_spec == 0
                else ("ACCEPT_WITH_DEVIATION" if out_of_spec == 1 else "REJECT")
            )
            self.store.add(
                "usage-decisions",
                {
                    "usage_decision_id": self._id("UD"),
                    "inspection_lot_id": il,
                    "lot_id": lot,
                    "decision": decision,
                    "decided_at": local_naive(decided, tz),
                    "updated_at": iso(decided + 30),
                },
                decided + 30,
            )
        for c in ev.confirmations:
            if c.scrap <= 0:
                continue
            left = c.scrap
            codes = list(DEFECT_CODES)
            while left > 0:
                code = codes[r.randrange(len(codes))]
                n = left if left <= 2 else r.randint(1, left)
                left -= n
                en, zh = DEFECT_CODES[code]
                self.store.add(
                    "defects",
                    {
                        "defect_record_id": self._id("DF"),
                        "confirmation_id": c.confirmation_id,
                        "material_number": c.op.wo.product.erp_material,
                        "machine_code": c.op.machine.code,
                        "defect_code": code,
                        "defect_text_en": en,
                        "defect_text_zh": zh,
                        "qty": n,
                        "recorded_at": local_naive(c.end, tz),
                        "updated_at": iso(c.end + 240),
                    },
                    c.end + 240,
                )
        self.store.flush()

    def finish(self, gen: Any) -> None:
        self.store.close()
