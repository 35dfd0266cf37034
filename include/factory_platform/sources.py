"""The source registry: every plant system, its interface, schedule and entities, declared once.

Adding an entity is one `Entity(...)` entry; adding a system is one `Source(...)` entry (plus,
for a new kind of interface, one client in `factory_platform.extract`). The extraction DAGs,
the raw tables, their assets and the load audit are all derived from this registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from factory_platform.extract.fields import Field

F = Field


@dataclass(frozen=True)
class Entity:
    """One entity of a source system, landed as `raw_<system>.<name>`."""

    name: str
    endpoint: str  # API path, SQL table or file pattern, depending on the interface
    natural_key: tuple[str, ...]
    cursor: str  # column that places a record in an interval (e.g. updated_at)
    fields: tuple[Field, ...]
    description: str = ""


@dataclass(frozen=True)
class Source:
    """A plant system and how it is reached."""

    system: str  # slug: raw_<system>, dbt source, extractor, connection and DAG id
    title: str
    interface: str  # rest | sql | csv_drop | xml_drop
    conn_id: str
    schedule_cron: str  # data-interval cron (UTC)
    lookback: timedelta
    entities: tuple[Entity, ...]
    max_reject_share: float = 0.05
    page_size: int = 500
    encoding: str = "utf-8"
    owner: str = "data-platform"

    @property
    def dag_id(self) -> str:
        return f"extract_{self.system}"

    def entity(self, name: str) -> Entity:
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(f"{self.system} has no entity {name!r}")


_MES_WHERE = (F("site_code", required=True), F("line_code", required=True))

MES = Source(
    system="mes",
    title="MES — work orders, operations, confirmations, machine states, consumption, lots",
    interface="rest",
    conn_id="mes_api",
    schedule_cron="*/15 * * * *",
    lookback=timedelta(hours=2),
    max_reject_share=0.10,
    entities=(
        Entity(
            name="work_orders", endpoint="/api/v1/work-orders",
            natural_key=("work_order_id",), cursor="updated_at",
            description="MES work orders released from ERP production orders (change feed).",
            fields=(
                F("work_order_id", required=True), F("erp_order_number"), F("site_code", required=True),
                F("line_code", required=True), F("item_code", required=True),
                F("planned_qty", "int", minimum=0), F("unit"), F("due_date", "date"),
                F("status"),
                F("released_at", "timestamptz"), F("actual_start_at", "timestamptz"),
                F("actual_end_at", "timestamptz"), F("updated_at", "timestamptz", required=True),
            ),
        ),
        Entity(
            name="operations", endpoint="/api/v1/operations",
            natural_key=("operation_id",), cursor="updated_at",
            description="Operations of work orders on machines (change feed).",
            fields=(
                F("operation_id", required=True), F("work_order_id", required=True),
                F("operation_seq", "int"), *_MES_WHERE, F("machine_code", required=True),
                F("item_code"), F("planned_qty", "int"), F("ideal_cycle_time_seconds", "numeric"),
                F("status"), F("actual_start_at", "timestamptz"), F("actual_end_at", "timestamptz"),
                F("updated_at", "timestamptz", required=True),
            ),
        ),
        Entity(
            name="confirmations", endpoint="/api/v1/confirmations",
            natural_key=("confirmation_id",), cursor="updated_at",
            description="Operation confirmations per shift segment: good, scrap and rework pieces.",
            fields=(
                F("confirmation_id", required=True), F("operation_id", required=True),
                F("work_order_id", required=True), *_MES_WHERE,
                F("machine_code", required=True), F("item_code", required=True),
                F("production_date", "date"), F("shift_code"),
                F("start_at", "timestamptz", required=True), F("end_at", "timestamptz", required=True),
                F("good_qty", "int", required=True, minimum=0),
                F("scrap_qty", "int", required=True, minimum=0),
                F("rework_qty", "int", required=True, minimum=0), F("unit"),
                F("updated_at", "timestamptz", required=True),
            ),
        ),
        Entity(
            name="machine_states", endpoint="/api/v1/machine-states",
            natural_key=("state_id",), cursor="updated_at",
            description="Machine state intervals with reason codes, split at shift boundaries.",
            fields=(
                F("state_id", required=True), *_MES_WHERE, F("machine_code", required=True),
                F("state", required=True), F("reason_code"), F("reason_text_en"),
                F("reason_text_zh"), F("operation_id"),
                F("start_at", "timestamptz", required=True), F("end_at", "timestamptz", required=True),
                F("production_date", "date"), F("shift_code"),
                F("updated_at", "timestamptz", required=True),
            ),
        ),
        Entity(
            name="material_consumptions", endpoint="/api/v1/material-consumptions",
            natural_key=("consumption_id",), cursor="updated_at",
            description="Components consumed by operations, per consumed lot (genealogy input).",
            fields=(
                F("consumption_id", required=True), F("operation_id", required=True),
                F("work_order_id"), F("confirmation_id"), F("machine_code", required=True),
                F("item_code", required=True), F("lot_id", required=True),
                F("qty", "numeric", required=True, minimum=0), F("unit", required=True),
                F("consumed_at", "timestamptz"), F("produced_lot_id"),
                F("updated_at", "timestamptz", required=True),
            ),
        ),
        Entity(
            name="produced_lots", endpoint="/api/v1/produced-lots",
            natural_key=("lot_id",), cursor="updated_at",
            description="Lots produced by confirmations (genealogy output).",
            fields=(
                F("lot_id", required=True), F("work_order_id"), F("operation_id"),
                F("confirmation_id"), F("machine_code", required=True),
                F("item_code", required=True), F("qty", "int", required=True, minimum=0),
                F("unit"),
                F("produced_at", "timestamptz"), F("updated_at", "timestamptz", required=True),
            ),
        ),
    ),
)

SOURCES: dict[str, Source] = {source.system: source for source in (MES,)}


def get_source(system: str) -> Source:
    try:
        return SOURCES[system]
    except KeyError:
        raise KeyError(f"unknown plant system {system!r}; known: {sorted(SOURCES)}") from None
