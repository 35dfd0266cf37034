"""
### extract_scada — SCADA historian exports into `raw_scada.*`

Every hour (UTC data intervals) the historian's hourly exports in the inbox of connection
`scada_drops` are loaded: tag values (`raw_scada.tag_values`, one row per machine × tag ×
minute) and alarms (`raw_scada.alarms`). A 3-hour lookback catches files dropped late.

* **Fast path:** tag-value files are COPYed byte for byte into Postgres, which parses and
  casts them; a file it refuses is re-read line by line so each bad line is quarantined with
  its line number and the rest loads. `raw_scada.tag_values` is a view over
  `tag_values__rows` and `tag_values__files` (batch metadata once per file).
* **Idempotent:** a batch replaces exactly the rows of the files it read; re-runs and
  backfills find loaded files in `archive/`.
* **Nothing lost:** bad files go to `quarantine/` with a reason; `ops.quarantine` and
  `ops.load_audit` account for every line.

* **Assets:** each raw table is an Airflow asset; `transform_dbt` runs when they update.

Client: `include/factory_platform/extract/files.py` (README_files.md); registry entry:
`include/factory_platform/sources/scada.py`.
"""

from factory_platform.dag_factory import build_extract_dag

dag = build_extract_dag("scada", __doc__)
