"""World configuration, read from TOML with `tomllib`. See README "Configuration"."""

from __future__ import annotations

import datetime as dt
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from plant_sim.faults import parse_spec

MACHINE_TYPES: dict[str, tuple[str, str]] = {
    "CNC": ("CNC machining centre", "数控加工中心"),
    "PRESS": ("Stamping press", "冲压机"),
    "MOLD": ("Injection moulding machine", "注塑机"),
    "ASSY": ("Assembly station", "装配工位"),
    "PACK": ("Packing machine", "包装机"),
}


@dataclass(frozen=True)
class Site:
    """An ISA-95 site with its time zone."""

    code: str
    name_en: str
    name_zh: str
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Machine:
    """An ISA-95 work unit. `cycle_factor` scales the product's ideal cycle on this machine."""

    code: str
    line_code: str
    site_code: str
    area_code: str
    machine_type: str
    index: int
    name_en: str
    name_zh: str
    cycle_factor: float


@dataclass(frozen=True)
class Line:
    """An ISA-95 work centre (line) of parallel machines in an area."""

    code: str
    site_code: str
    area_code: str
    name_en: str
    name_zh: str
    machine_type: str
    products: tuple[str, ...]
    machines: tuple[Machine, ...]


@dataclass(frozen=True)
class BomItem:
    """One BOM component: `qty` of `component` (ERP number) per piece of the parent."""

    component: str
    qty: float


@dataclass(frozen=True)
class Product:
    """A finished/semi-finished item: ERP material number vs MES item code."""

    erp_material: str
    mes_item: str
    name_en: str
    name_zh: str
    ideal_cycle_s: float
    bom: tuple[BomItem, ...]


@dataclass(frozen=True)
class Material:
    """A purchased component/raw material."""

    erp_material: str
    mes_item: str
    name_en: str
    name_zh: str
    unit: str


@dataclass(frozen=True)
class Config:
    """The whole world configuration."""

    name: str
    start_date: dt.date
    days: int
    order_load: float
    sites: tuple[Site, ...]
    lines: tuple[Line, ...]
    products: tuple[Product, ...]
    materials: tuple[Material, ...]
    scrap_rate: float
    rework_rate: float
    mtbf_run_hours: float
    mttr_minutes: float
    pm_hours: float
    scada_tags: int
    defects: dict[str, float] = field(default_factory=dict)
    sha256: str = ""
    orders_per_line_day: tuple[int, int] = (1, 3)
    """How many production orders the ERP releases per line and day: drawn uniformly from this
    closed range. Each order is one operation per machine of the line, so more orders mean
    shorter operations and more confirmations between shift changes."""
    wms_file_minutes: int = 60
    """`[wms] movement_file_minutes`: how much time one WMS movements file covers (a divisor of
    60); the file is named after its first minute."""
    wms_file_delay_minutes: float = 5.0
    """`[wms] movement_file_delay_minutes`: how long after the end of its period the WMS
    exporter drops the file."""
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`[faults.<system>]` delivery faults, applied when the world is served (see faults.py)."""

    @property
    def machines(self) -> list[Machine]:
        return [m for line in self.lines for m in line.machines]

    def product(self, erp_material: str) -> Product:
        return self._products[erp_material]

    def material(self, erp_material: str) -> Material:
        return self._materials[erp_material]

    def site(self, code: str) -> Site:
        return next(s for s in self.sites if s.code == code)

    @property
    def _products(self) -> dict[str, Product]:
        return {p.erp_material: p for p in self.products}

    @property
    def _materials(self) -> dict[str, Material]:
        return {m.erp_material: m for m in self.materials}


def _machines_for(
    line: dict, site_code: str, area: str, mtype: str
) -> tuple[Machine, ...]:
    en, zh = MACHINE_TYPES[mtype]
    factors = line.get("cycle_factors") or [1.0, 0.95, 1.05, 1.1, 0.9, 1.0]
    out = []
    for i in range(1, int(line["machines"]) + 1):
        out.append(
            Machine(
                code=f"{line['code']}-M{i:02d}",
                line_code=line["code"],
                site_code=site_code,
                area_code=area,
                machine_type=mtype,
                index=i,
                name_en=f"{en} {line['code']}-{i:02d}",
                name_zh=f"{zh}{line['code']}-{i:02d}",
                cycle_factor=float(factors[(i - 1) % len(factors)]),
            )
        )
    return tuple(out)


def _orders_per_line_day(value: Any) -> tuple[int, int]:
    """`orders_per_line_day = [low, high]`: whole numbers, 1 ≤ low ≤ high."""
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not 1 <= value[0] <= value[1]):
        raise ValueError(f"orders_per_line_day must be [low, high] with whole numbers "
                         f"1 <= low <= high, got {value!r}")
    return value[0], value[1]


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML world config."""
    raw_bytes = Path(path).read_bytes()
    raw = tomllib.loads(raw_bytes.decode("utf-8"))
    sites = tuple(
        Site(s["code"], s["name_en"], s["name_zh"], s["timezone"]) for s in raw["sites"]
    )
    site_codes = {s.code for s in sites}
    lines = []
    for ln in raw["lines"]:
        if ln["site"] not in site_codes:
            raise ValueError(f"line {ln['code']}: unknown site {ln['site']}")
        area = ln.get("area", f"{ln['site']}-A1")
        mtype = ln.get("machine_type", "CNC")
        lines.append(
            Line(
                code=ln["code"],
                site_code=ln["site"],
                area_code=area,
                name_en=ln.get("name_en", ln["code"]),
                name_zh=ln.get("name_zh", ln["code"]),
                machine_type=mtype,
                products=tuple(ln["products"]),
                machines=_machines_for(ln, ln["site"], area, mtype),
            )
        )
    products = tuple(
        Product(
            erp_material=str(p["erp_material"]),
            mes_item=p["mes_item"],
            name_en=p["name_en"],
            name_zh=p["name_zh"],
            ideal_cycle_s=float(p["ideal_cycle_s"]),
            bom=tuple(
                BomItem(str(b["component"]), float(b["qty"])) for b in p.get("bom", [])
            ),
        )
        for p in raw["products"]
    )
    materials = tuple(
        Material(
            str(m["erp_material"]), m["mes_item"], m["name_en"], m["name_zh"], m["unit"]
        )
        for m in raw.get("materials", [])
    )
    known = {p.erp_material for p in products} | {m.erp_material for m in materials}
    for p in products:
        for b in p.bom:
            if b.component not in known:
                raise ValueError(
                    f"product {p.erp_material}: unknown BOM component {b.component}"
                )
    for ln in lines:
        for code in ln.products:
            if code not in {p.erp_material for p in products}:
                raise ValueError(f"line {ln.code}: unknown product {code}")
    rel = raw.get("reliability", {})
    qual = raw.get("quality", {})
    return Config(
        name=raw.get("name", Path(path).stem),
        start_date=dt.date.fromisoformat(str(raw["start_date"])),
        days=int(raw["days"]),
        order_load=float(raw.get("order_load", 0.72)),
        orders_per_line_day=_orders_per_line_day(raw.get("orders_per_line_day", [1, 3])),
        sites=sites,
        lines=tuple(lines),
        products=products,
        materials=materials,
        scrap_rate=float(qual.get("scrap_rate", 0.02)),
        rework_rate=float(qual.get("rework_rate", 0.015)),
        mtbf_run_hours=float(rel.get("mtbf_run_hours", 9.0)),
        mttr_minutes=float(rel.get("mttr_minutes", 35.0)),
        pm_hours=float(rel.get("pm_hours", 2.0)),
        scada_tags=int(raw.get("scada", {}).get("tags_per_machine", 5)),
        wms_file_minutes=_wms_file_minutes(raw.get("wms", {})),
        wms_file_delay_minutes=float(raw.get("wms", {}).get("movement_file_delay_minutes", 5)),
        defects={k: float(v) for k, v in raw.get("defects", {}).items()},
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        faults=parse_spec(raw.get("faults", {})),
    )


def _wms_file_minutes(wms: dict[str, Any]) -> int:
    minutes = int(wms.get("movement_file_minutes", 60))
    if minutes < 1 or 60 % minutes:
        raise ValueError(f"[wms] movement_file_minutes must divide 60, not {minutes}")
    return minutes
