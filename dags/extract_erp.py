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
"""

from factory_platform.dag_factory import build_extract_dag

dag = build_extract_dag("erp", __doc__)
