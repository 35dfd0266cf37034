"""
### extract_qms — QMS into `raw_qms.*`

Every 15 minutes (UTC data intervals) each QMS entity — characteristics, inspection lots,
inspection results, defects, nonconformances, usage decisions — is read from the QMS REST API
(`updated_since` cursor, keyset pages, connection `qms_api`) for the run's interval plus a
2-hour lookback, and COPY-loaded into `raw_qms.<entity>`. QMS business times are local wall
time without offset (landed as delivered; staging converts them with the site's zone).

* **Idempotent:** a re-run or backfill of an interval replaces exactly that window's rows.
* **Nothing lost:** rejected records land in `ops.quarantine` with their page and reason.
* **Assets:** each raw table is an Airflow asset; `transform_dbt` runs when they update.

QMS: REST JSON API, the same shape as the MES (`updated_since` cursor, keyset pages).

Business times (`created_at`, `measured_at`, `recorded_at`, `opened_at`, `decided_at`) are the
site's local wall time without offset, landed as `timestamp` and converted in staging;
`updated_at` is UTC and places each record in an interval.
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.rest_spec import ApiKeyAuth, CursorPaginator, RestApi
from factory_platform.sources import Entity, Source

_UPDATED = F("updated_at", "timestamptz", required=True)

SOURCE = Source(
    system="qms",
    title="QMS — inspection lots, characteristics, results, defects, nonconformances, usage decisions",
    interface="rest",
    conn_id="qms_api",
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
    max_reject_share=0.05,
    entities=(
        Entity(
            name="characteristics", endpoint="/api/v1/characteristics",
            natural_key=("characteristic_id",), cursor="updated_at",
            description="Inspection characteristics per material with spec limits.",
            fields=(
                F("characteristic_id", required=True), F("material_number", required=True),
                F("characteristic_code", required=True), F("name_en"), F("name_zh"), F("unit"),
                F("target", "numeric"), F("lower_spec_limit", "numeric"),
                F("upper_spec_limit", "numeric"), _UPDATED,
            ),
        ),
        Entity(
            name="inspection_lots", endpoint="/api/v1/inspection-lots",
            natural_key=("inspection_lot_id",), cursor="updated_at",
            description="Inspection lots, one per produced lot sampled.",
            fields=(
                F("inspection_lot_id", required=True), F("lot_id", required=True),
                F("material_number", required=True), F("site_code", required=True),
                F("machine_code"), F("lot_qty", "int", minimum=0),
                F("sample_size", "int", minimum=0), F("created_at", "timestamp"), _UPDATED,
            ),
        ),
        Entity(
            name="inspection_results", endpoint="/api/v1/inspection-results",
            natural_key=("result_id",), cursor="updated_at",
            description="Measured values per inspection lot, characteristic and sample.",
            fields=(
                F("result_id", required=True), F("inspection_lot_id", required=True),
                F("characteristic_id", required=True), F("sample_no", "int"),
                F("value", "numeric", required=True), F("unit"), F("in_spec", "bool"),
                F("measured_at", "timestamp"), _UPDATED,
            ),
        ),
        Entity(
            name="defects", endpoint="/api/v1/defects",
            natural_key=("defect_record_id",), cursor="updated_at",
            description="Defects by code per MES confirmation (pieces; sum = the scrap).",
            fields=(
                F("defect_record_id", required=True), F("confirmation_id", required=True),
                F("material_number"), F("machine_code"), F("defect_code", required=True),
                F("defect_text_en"), F("defect_text_zh"), F("qty", "int", required=True, minimum=0),
                F("recorded_at", "timestamp"), _UPDATED,
            ),
        ),
        Entity(
            name="nonconformances", endpoint="/api/v1/nonconformances",
            natural_key=("nc_id",), cursor="updated_at",
            description="Nonconformance reports opened on inspection lots.",
            fields=(
                F("nc_id", required=True), F("inspection_lot_id"), F("lot_id"), F("severity"),
                F("description_en"), F("description_zh"), F("opened_at", "timestamp"),
                F("status"), _UPDATED,
            ),
        ),
        Entity(
            name="usage_decisions", endpoint="/api/v1/usage-decisions",
            natural_key=("usage_decision_id",), cursor="updated_at",
            description="Usage decisions per inspection lot (ACCEPT, ACCEPT_WITH_DEVIATION, REJECT).",
            fields=(
                F("usage_decision_id", required=True), F("inspection_lot_id", required=True),
                F("lot_id"), F("decision", required=True), F("decided_at", "timestamp"), _UPDATED,
            ),
        ),
    ),
)
