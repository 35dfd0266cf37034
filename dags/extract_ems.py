"""
### extract_ems — EMS meter readings into `raw_ems.meter_readings`

Every hour (UTC data intervals) the EMS exports (kWh per machine and 15 minutes, local times
with offset) in the inbox of connection `ems_drops` are loaded, with a 3-hour lookback for
late files.

* **Idempotent:** a batch replaces exactly the rows of the files it read; re-runs and
  backfills find loaded files in `archive/`.
* **Nothing lost:** a file cut off mid-row is quarantined whole — moved to `quarantine/` with a
  `.reason.txt`, each of its lines in `ops.quarantine` — and contributes no kWh; every batch
  is counted in `ops.load_audit`.

* **Assets:** each raw table is an Airflow asset; `transform_dbt` runs when they update.

Client: `include/factory_platform/extract/files.py` (README_files.md); registry entry:
`include/factory_platform/sources/ems.py`.
"""

from factory_platform.dag_factory import build_extract_dag

dag = build_extract_dag("ems", __doc__)
