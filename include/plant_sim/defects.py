"""Defect injection: which records get which defect, and the list of them in the truth.

A kind with rate r hits every (1/r)-th eligible record, starting at a seeded random phase
(systematic sampling): the number injected is exactly floor(r × eligible + phase), deterministic,
and at least one as soon as r × eligible ≥ 1. Every hit is written to `truth.injected_defects`.
"""

from __future__ import annotations

from dataclasses import dataclass

from plant_sim import rng as rngmod
from plant_sim.truth import TruthWriter

KINDS: dict[str, tuple[str, str, str, str]] = {
    # kind: (system, entity, action, what a correct platform does)
    "mes_duplicate": (
        "mes",
        "confirmations",
        "repair",
        "same confirmation re-sent later with identical content: keep one per id",
    ),
    "mes_late": (
        "mes",
        "confirmations",
        "repair",
        "recorded 30-110 min after its end: caught by the extraction lookback",
    ),
    "mes_out_of_order": (
        "mes",
        "machine-states",
        "repair",
        "recorded after the machine's next interval: order by start_at, not arrival",
    ),
    "mes_unit_mismatch": (
        "mes",
        "material-consumptions",
        "repair",
        "quantity sent in g instead of kg: convert with the unit",
    ),
    "mes_null_mandatory": (
        "mes",
        "confirmations",
        "quarantine",
        "machine_code is null: quarantine, exclude from KPIs",
    ),
    "mes_negative_qty": (
        "mes",
        "confirmations",
        "quarantine",
        "negative scrap_qty: quarantine, exclude from KPIs",
    ),
    "mes_orphan": (
        "mes",
        "material-consumptions",
        "quarantine",
        "unknown item code: quarantine, exclude from consumption and genealogy",
    ),
    "wms_xref_code": (
        "wms",
        "movements",
        "repair",
        "legacy material code: resolve through erp.material_xref",
    ),
    "wms_duplicate_file": (
        "wms",
        "movements",
        "repair",
        "the same file delivered twice under another name: load once",
    ),
    "ems_malformed_file": (
        "ems",
        "meter_readings",
        "quarantine",
        "file cut off mid-row: quarantine the whole file",
    ),
    "scada_spike": ("scada", "tag_values", "flag", "one sample ×20: flag as outlier"),
    "scada_flatline": (
        "scada",
        "tag_values",
        "flag",
        "a tag repeats its value for 30 min while the machine runs: flag",
    ),
    "scada_gap": (
        "scada",
        "tag_values",
        "flag",
        "all tags of a machine missing for 15 min: report the gap",
    ),
    "opcua_bad_quality": (
        "opcua",
        "tag_values",
        "flag",
        "5 Temperature samples with status BadSensorFailure: keep the status, flag the values",
    ),
    "mqtt_duplicate": (
        "mqtt",
        "machine_events",
        "repair",
        "the same message (same message_id and payload) published again: keep one per id",
    ),
    "mqtt_out_of_order": (
        "mqtt",
        "machine_events",
        "repair",
        "published after the machine's next three events: order by event_time",
    ),
    "mqtt_reconnect": (
        "mqtt",
        "machine_events",
        "repair",
        "the publisher drops its connection for 20-120 s; QoS 1 messages follow late",
    ),
    "mqtt_broker_restart": (
        "mqtt",
        "machine_events",
        "repair",
        "the broker restarts: a persistent QoS 1 session loses nothing it accepted",
    ),
    "modbus_counter_rollover": (
        "modbus",
        "registers",
        "repair",
        "a 32-bit PLC counter rolls over to 0: unwrap (delta mod 2^32)",
    ),
}
"""kind → (system, entity, action, description). Config key = kind, value = rate."""


@dataclass
class _Acc:
    rate: float
    acc: float
    eligible: int = 0
    hits: int = 0


class Defects:
    """Deterministic defect decisions + their truth rows."""

    def __init__(self, seed: int, rates: dict[str, float], truth: TruthWriter) -> None:
        unknown = set(rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown defect kinds in config: {sorted(unknown)}")
        self.truth = truth
        self.state = {
            kind: _Acc(rate, rngmod.stream(seed, "defect-phase", kind).random())
            for kind, rate in rates.items()
            if rate > 0
        }
        self.next_id = 1

    def hit(self, kind: str) -> bool:
        """Count one eligible record for `kind`; True if it gets the defect."""
        st = self.state.get(kind)
        if st is None:
            return False
        st.eligible += 1
        before = int(st.acc)
        st.acc += st.rate
        if int(st.acc) > before:
            st.hits += 1
            return True
        return False

    def record(
        self,
        kind: str,
        record_id: str | None = None,
        file_name: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Write one injected defect to the truth."""
        system, entity, action, what = KINDS[kind]
        self.truth.row(
            "injected_defects",
            {
                "defect_id": self.next_id,
                "kind": kind,
                "system": system,
                "entity": entity,
                "record_id": record_id,
                "file_name": file_name,
                "action": action,
                "detail": detail or what,
            },
        )
        self.next_id += 1

    def counts(self) -> dict[str, int]:
        """Injected defects per kind."""
        return {k: st.hits for k, st in sorted(self.state.items())}
