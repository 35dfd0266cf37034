"""
### extract_mes — MES into `raw_mes.*`

Every 15 minutes (UTC data intervals) each MES entity — work orders, operations,
confirmations, machine states, material consumptions, produced lots — is read from the MES
REST API (`updated_since` cursor, keyset pages, connection `mes_api`) for the run's interval
plus a 2-hour lookback, and COPY-loaded into `raw_mes.<entity>`.

* **Idempotent:** a re-run or backfill of an interval replaces exactly that window's rows.
* **Nothing lost:** rejected records land in `ops.quarantine` with their page and reason; every
  batch is counted in `ops.load_audit`.
* **Assets:** each raw table is an Airflow asset; `transform_dbt` runs when they update.

Source registry: `include/factory_platform/sources/mes.py`.

MES: REST JSON API with an `updated_since` cursor and keyset pages (see the plant's MES docs).

All MES timestamps are UTC. Records are a change feed: the same id may arrive in several
versions (staging keeps the latest `updated_at`).
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.rest_spec import ApiKeyAuth, CursorPaginator, RestApi
from factory_platform.sources import Entity, Source

_MES_WHERE = (F("site_code", required=True), F("line_code", required=True))

SOURCE = Source(
    system="mes",
    title="MES — work orders, operations, confirmations, machine states, consumption, lots",
    interface="rest",
    conn_id="mes_api",
    # the window by `updated_since`/`updated_before`; keyset pages: each answer names the next
    # page's cursor (`next_cursor`, null on the last); the key in `X-API-Key`
    rest=RestApi(
        window=("updated_since", "updated_before"),
        paginator=CursorPaginator(data_path="data", cursor_path="next_cursor",
                                  cursor_param="cursor", limit_param="limit"),
        auth=ApiKeyAuth(name="X-API-Key"),
    ),
    schedule_cron="*/15 * * * *",
    change_feed="api",  # a record newer than the high-water mark starts a run (change_triggers)
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

