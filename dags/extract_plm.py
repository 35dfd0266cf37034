"""
### extract_plm — PLM XML exports into `raw_plm.*`

Daily (06:00 UTC data intervals) the PLM exports in the inbox of connection `plm_drops` are
parsed — with entity resolution, DTD loading and network access off — into `raw_plm.items`,
`raw_plm.bom_lines` (one row per BOM component) and `raw_plm.ecos`. A 2-day lookback catches
late exports.

* **Idempotent:** a batch replaces exactly the rows of the files it read; each export is kept
  (keys include `exported_at`), staging takes the latest.
* **Nothing lost:** a file that is not well-formed XML moves to `quarantine/` with a reason and
  is recorded in `ops.quarantine`; a file moves to `archive/` once all three entities loaded it.

* **Assets:** each raw table is an Airflow asset; `transform_dbt` runs when they update.

Client: `include/factory_platform/extract/plm_xml.py` (README_files.md); registry entry:
`include/factory_platform/sources/plm.py`.
"""

from factory_platform.dag_factory import build_extract_dag

dag = build_extract_dag("plm", __doc__)
