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
"""

from factory_platform.dag_factory import build_extract_dag

dag = build_extract_dag("eam", __doc__)
