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
"""

from factory_platform.dag_factory import build_extract_dag

dag = build_extract_dag("qms", __doc__)
