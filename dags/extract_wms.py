"""
### extract_wms — WMS file drops into `raw_wms.*`

Every hour (UTC data intervals) the WMS exports dropped into the inbox of connection
`wms_drops` are loaded: hourly goods movements (`raw_wms.movements`) and daily cycle counts
(`raw_wms.cycle_counts`). Files are GB18030, `;`, CRLF; Chinese texts arrive as UTF-8.

* **Pick-up:** a run reads the files whose UTC hour/day (in the file name) lies in its interval —
  from the inbox or, on a re-run or backfill, from `archive/` — plus late files still waiting in
  the inbox within the 36-hour lookback (cycle counts arrive the morning after their date).
* **Idempotent:** a batch replaces exactly the rows of the files it read; a `…_RESEND.csv` with
  the same bytes (sha256) loads nothing and counts as duplicates.
* **Nothing lost:** a cut-off or unreadable file moves to `quarantine/` with a `.reason.txt`;
  its lines and every bad record are in `ops.quarantine`; each batch is in `ops.load_audit`.

* **Assets:** each raw table is an Airflow asset; `transform_dbt` runs when they update.

Client: `include/factory_platform/extract/files.py` (README_files.md); registry entry:
`include/factory_platform/sources/wms.py`.
"""

from factory_platform.dag_factory import build_extract_dag

dag = build_extract_dag("wms", __doc__)
