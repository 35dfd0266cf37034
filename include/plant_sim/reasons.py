"""Machine-state reason codes: the plant's shared vocabulary (the world simulates them; MES, EAM
and SCADA report them with their texts), so every system reads them from here."""

from __future__ import annotations

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
