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
"""

from factory_platform.dag_factory import build_extract_dag

dag = build_extract_dag("mes", __doc__)
