"""
### extract_eam — EAM / CMMS database into `raw_eam.*`

Every hour (UTC data intervals) the EAM tables are read with SQL from the EAM's own Postgres
database (connection `eam_db`, schema `eam`, times in UTC) through a server-side cursor and
COPY-loaded into `raw_eam.<table>`:

* **equipment** — the register and its ISA-95 hierarchy, as a snapshot per run.
* **failures**, **maintenance_orders** — rows that change after insert (a failure ends, an
  order starts and closes) and have no change column: each is read by its latest recorded
  event, `version_at` (`ended_at`, else `reported_at`; `actual_end_at`, else `actual_start_at`,
  else `planned_start_at`), for the run's interval plus an 8-hour lookback. Staging keeps the
  latest version per key.

* **Idempotent:** a re-run or backfill of an interval replaces exactly the rows whose
  `version_at` lies in its window (or the snapshot); running every interval twice changes nothing.
* **Nothing lost:** rows with a null mandatory field or a bad value land in `ops.quarantine`
  with their key and reason; every batch is counted in `ops.load_audit`.
* **Assets:** each raw table is an Airflow asset.

Source registry: `include/factory_platform/sources/eam.py`; client: `extract/sql.py`.

EAM / CMMS: its own Postgres database (connection `eam_db`, schema `eam`), read every hour.

Timestamps are `timestamptz` (UTC). The interface has no change column, yet failures and
maintenance orders change after insert (a failure gets `ended_at`, an order is started and
closed). The extractor therefore adds `version_at` (`timestamptz`): the latest event the row
records —

| table | read as | `version_at` |
| --- | --- | --- |
| equipment | snapshot per run | — (register of a plant: hundreds to a few thousand rows, no change column; the snapshot also carries hierarchy moves and retirements) |
| failures | window on `version_at` | `coalesce(ended_at, reported_at, started_at)` — open: when reported; closed: when it ended |
| maintenance_orders | window on `version_at` | `coalesce(actual_end_at, actual_start_at, planned_start_at)` — planned → started → finished |

Each version of a row thus lands in exactly one interval (the one holding its `version_at`);
the query is written as plain ranges per column, OR-ed, so indexes serve it. When a row moves to
its next version, the re-run or the next window replaces it; an older version loaded earlier
and outside the lookback stays in raw beside the newer one, and staging keeps the latest per
natural key by `version_at`. A row that records no time at all cannot be placed and is not read;
an edit that changes no time (e.g. a status correction) is seen only within the lookback
(8 hours, one shift) or by a backfill — the EAM interface should grow an `updated_at`.
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.sources import Entity, Source

SOURCE = Source(
    system="eam",
    title="EAM / CMMS — equipment register and hierarchy, failures, maintenance orders",
    interface="sql",
    conn_id="eam_db",
    schedule_cron="0 * * * *",
    lookback=timedelta(hours=8),
    max_reject_share=0.05,
    page_size=2000,
    entities=(
        Entity(
            name="equipment", endpoint="eam.equipment", natural_key=("equipment_id",),
            cursor=None, options=(("mode", "snapshot"),),
            description="Equipment register with the ISA-95 hierarchy; system of record.",
            fields=(
                F("equipment_id", required=True), F("equipment_code", required=True),
                F("parent_equipment_id"), F("hierarchy_level", required=True),
                F("name_en"), F("name_zh"), F("site_code"), F("machine_type"),
                F("manufacturer"), F("commissioned_on", "date"),
            ),
        ),
        Entity(
            name="failures", endpoint="eam.failures", natural_key=("failure_id",),
            cursor="version_at",
            options=(("mode", "window"), ("version_columns", "ended_at,reported_at,started_at")),
            description="Failures (= MES unplanned-downtime intervals), latest version by version_at.",
            fields=(
                F("failure_id", required=True), F("equipment_id", required=True),
                F("failure_code", required=True), F("failure_text_en"), F("failure_text_zh"),
                F("started_at", "timestamptz", required=True), F("ended_at", "timestamptz"),
                F("reported_at", "timestamptz"),
                F("version_at", "timestamptz", required=True),
            ),
        ),
        Entity(
            name="maintenance_orders", endpoint="eam.maintenance_orders",
            natural_key=("order_id",), cursor="version_at",
            options=(("mode", "window"),
                     ("version_columns", "actual_end_at,actual_start_at,planned_start_at")),
            description="Corrective (one per failure) and preventive maintenance orders.",
            fields=(
                F("order_id", required=True), F("equipment_id", required=True),
                F("order_type", required=True), F("failure_id"), F("description_en"),
                F("description_zh"), F("planned_start_at", "timestamptz"),
                F("actual_start_at", "timestamptz"), F("actual_end_at", "timestamptz"),
                F("status", required=True), F("version_at", "timestamptz", required=True),
            ),
        ),
    ),
)
