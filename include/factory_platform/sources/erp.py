"""
### extract_erp — ERP database into `raw_erp.*`

Every hour (UTC data intervals) each ERP table is read with SQL from the ERP's own Postgres
database (connection `erp_db`, schema `erp`) through a server-side cursor and COPY-loaded into
`raw_erp.<table>`:

* **Master data** — plants, materials, material_xref, boms, routings, customers — as a snapshot
  per run (small tables without a change column), replaced in one transaction.
* **Orders** — sales, production and purchase orders — by their creation/release/order time for
  the run's interval plus a 3-hour lookback. ERP times are local (`erp.plants.timezone`); the
  UTC interval is matched in the plant's zone with an index-friendly range, so each row lands in
  exactly one interval, also on the 25-hour DST night. Raw keeps the local time as delivered and
  adds its UTC instant (`*_utc`).
* **Inventory balances** — per local date; each run replaces the dates from the day before its
  window to its last date (restated balances are caught).
* **Inbound postings** — the ERP's answers to our postings, by `received_at`.

* **Idempotent:** a re-run or backfill of an interval replaces exactly its rows (by the UTC
  cursor window, the snapshot or the dates it owns); running every interval twice changes nothing.
* **Nothing lost:** rows with a null mandatory field or a bad value land in `ops.quarantine`
  with their key and reason; every batch is counted in `ops.load_audit`.
* **Assets:** each raw table is an Airflow asset.

Source registry: `include/factory_platform/sources/erp.py`; client: `extract/sql.py`.

ERP: its own Postgres database (connection `erp_db`, schema `erp`), read with SQL every hour.

Times are the ERP's: **local `timestamp without time zone`** in the plant's zone
(`erp.plants.timezone`), dates are local dates. Raw keeps them as delivered (`timestamp`,
`date`); staging converts to UTC. How each table is read (see `extract/sql.py` for the modes):

| table | read as | why |
| --- | --- | --- |
| plants, materials, material_xref, boms, routings, customers | snapshot per run | master data without a change column; a plant's worth of rows (tens to a few thousand) — one small full read replaces the snapshot atomically, deletions included |
| sales_orders | window on `created_at` (local) | inserted once, no change column; no plant column, so the ERP's default zone applies (`extra.timezone` of `erp_db`, else the only plant zone) |
| production_orders | window on `released_at` (local, plant's zone) | inserted at release |
| purchase_orders | window on `ordered_at` (local, plant's zone) | inserted when ordered |
| inventory_balances | date window on `balance_date` | one book per plant × material × date, written after the day's cycle count and restatable: each run re-reads and replaces the dates its window touches in any zone, plus the day before (3–4 dates per hourly run) |
| inbound_postings | window on `received_at` (timestamptz) | the ERP's answers to our postings, stored once per message |

For the local-time tables the extractor adds `<column>_utc` (`timestamptz`): the instant
PostgreSQL gives `<column> AT TIME ZONE <plant zone>` (in the repeated hour of the DST night the
later, standard-time instant). It places the row in exactly one interval and is the replace
column; `created_at`/`released_at`/`ordered_at` stay as delivered beside it.

Natural keys are the ERP's primary keys. Every version of a row keeps its key and cursor, so
staging can keep the latest per key. Rows with a null mandatory field or a negative quantity go
to quarantine; more than 5 % rejected in one batch fails the run.
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.sources import Entity, Source

SNAPSHOT = (("mode", "snapshot"),)
PLANT_ZONES = "select plant_code, timezone from erp.plants"


def _local_window(cursor: str, zone_key: str) -> tuple[tuple[str, str], ...]:
    """Options of a table read by a local-time column, placed in the zone of `zone_key`."""
    return (("mode", "window"), ("version_columns", cursor), ("local_time_zone", zone_key),
            ("zones_query", PLANT_ZONES))


SOURCE = Source(
    system="erp",
    title="ERP — master data, sales/production/purchase orders, inventory, inbound postings",
    interface="sql",
    conn_id="erp_db",
    schedule_cron="0 * * * *",
    lookback=timedelta(hours=3),
    max_reject_share=0.05,
    page_size=2000,
    # the ERP serves the plant's planners and its own batch jobs first: three sessions
    # at most for us, whatever runs at once (pool plant_erp)
    max_connections=3,
    entities=(
        Entity(
            name="plants", endpoint="erp.plants", natural_key=("plant_code",), cursor=None,
            options=SNAPSHOT,
            description="Plants with their IANA time zone (the zone of every ERP local time).",
            fields=(
                F("plant_code", required=True), F("name_en"), F("name_zh"),
                F("timezone", required=True),
            ),
        ),
        Entity(
            name="materials", endpoint="erp.materials", natural_key=("material_number",),
            cursor=None, options=SNAPSHOT,
            description="Material master (FERT products, ROH raw materials); system of record.",
            fields=(
                F("material_number", required=True), F("material_type", required=True),
                F("name_en"), F("name_zh"), F("base_unit", required=True),
            ),
        ),
        Entity(
            name="material_xref", endpoint="erp.material_xref",
            natural_key=("system", "external_code"), cursor=None, options=SNAPSHOT,
            description="Cross-reference of MES item codes and legacy WMS codes to ERP materials.",
            fields=(
                F("material_number", required=True), F("system", required=True),
                F("external_code", required=True),
            ),
        ),
        Entity(
            name="boms", endpoint="erp.boms",
            natural_key=("parent_material", "bom_revision", "component_material"), cursor=None,
            options=SNAPSHOT,
            description="Bills of material: component quantity per piece of the parent.",
            fields=(
                F("parent_material", required=True), F("bom_revision", required=True),
                F("component_material", required=True),
                F("qty_per", "numeric", required=True, minimum=0), F("unit", required=True),
            ),
        ),
        Entity(
            name="routings", endpoint="erp.routings",
            natural_key=("material_number", "line_code", "machine_code"), cursor=None,
            options=SNAPSHOT,
            description="Routings: operation sequence and ideal cycle time per machine.",
            fields=(
                F("material_number", required=True), F("line_code", required=True),
                F("machine_code", required=True), F("operation_seq", "int"),
                F("ideal_cycle_seconds", "numeric", required=True, minimum=0),
            ),
        ),
        Entity(
            name="customers", endpoint="erp.customers", natural_key=("customer_number",),
            cursor=None, options=SNAPSHOT,
            description="Customer master.",
            fields=(
                F("customer_number", required=True), F("name_en"), F("name_zh"), F("country"),
            ),
        ),
        Entity(
            name="sales_orders", endpoint="erp.sales_orders",
            natural_key=("sales_order_number",), cursor="created_at_utc",
            options=_local_window("created_at", "*"),
            description="Sales orders by creation time (local; the ERP's default zone).",
            fields=(
                F("sales_order_number", required=True), F("customer_number", required=True),
                F("material_number", required=True),
                F("order_qty", "numeric", required=True, minimum=0), F("unit"),
                F("requested_date", "date"), F("created_at", "timestamp", required=True),
                F("created_at_utc", "timestamptz", required=True),
            ),
        ),
        Entity(
            name="production_orders", endpoint="erp.production_orders",
            natural_key=("order_number",), cursor="released_at_utc",
            options=_local_window("released_at", "plant_code"),
            description="Production orders by release time (= MES work orders' erp_order_number).",
            fields=(
                F("order_number", required=True), F("plant_code", required=True),
                F("material_number", required=True), F("line_code", required=True),
                F("planned_qty", "numeric", required=True, minimum=0), F("unit"),
                F("due_date", "date"), F("released_at", "timestamp", required=True),
                F("sales_order_number"), F("released_at_utc", "timestamptz", required=True),
            ),
        ),
        Entity(
            name="purchase_orders", endpoint="erp.purchase_orders",
            natural_key=("po_number",), cursor="ordered_at_utc",
            options=_local_window("ordered_at", "plant_code"),
            description="Purchase orders by order time (po_number = WMS receipt reference).",
            fields=(
                F("po_number", required=True), F("plant_code", required=True), F("vendor_name"),
                F("material_number", required=True),
                F("order_qty", "numeric", required=True, minimum=0), F("unit", required=True),
                F("ordered_at", "timestamp", required=True), F("delivery_date", "date"),
                F("ordered_at_utc", "timestamptz", required=True),
            ),
        ),
        Entity(
            name="inventory_balances", endpoint="erp.inventory_balances",
            natural_key=("plant_code", "material_number", "balance_date"), cursor=None,
            options=(("mode", "date_window"), ("date_column", "balance_date"),
                     ("late_days", "1")),
            description="Book stock per plant, material and local date (after the cycle count).",
            fields=(
                F("plant_code", required=True), F("material_number", required=True),
                F("balance_date", "date", required=True), F("qty", "numeric", required=True),
                F("unit", required=True),
            ),
        ),
        Entity(
            name="inbound_postings", endpoint="erp.inbound_postings",
            natural_key=("posting_id",), cursor="received_at",
            options=(("mode", "window"),),
            description="Every message the platform posted to the ERP, with the ERP's answer.",
            fields=(
                F("posting_id", "int", required=True), F("idempotency_key", required=True),
                F("message_type", required=True), F("payload", "json", required=True),
                F("status", required=True), F("reason"), F("erp_document_number"),
                F("reversal_of"), F("received_at", "timestamptz", required=True),
            ),
        ),
    ),
)
