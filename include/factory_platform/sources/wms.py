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

WMS: legacy CSV exports dropped into a folder (see the plant's WMS docs).

GB18030, `;`, CRLF, header row, no quoting. Times are site-local wall time without offset
(`timestamp`; staging converts with the site's zone — the file name's UTC hour settles the
repeated hour when clocks go back). Movements come hourly (the file name carries the UTC hour,
a copy may follow as `…_RESEND.csv`), cycle counts once per production date, 10 minutes after
its last shift — up to ~30 h after the date's midnight, hence the 36 h lookback.
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.sources import Entity, Source

SOURCE = Source(
    system="wms",
    title="WMS — goods movements (receipts, issues, put-away, transfers) and cycle counts",
    interface="csv_drop",
    conn_id="wms_drops",
    schedule_cron="0 * * * *",
    change_feed="inbox",  # a settled file in the inbox starts a run (change_triggers)
    lookback=timedelta(hours=36),
    encoding="gb18030",
    entities=(
        Entity(
            name="movements",
            endpoint=(r"WMS_MOVEMENTS_[A-Z0-9]+_(?P<hour>\d{8}T\d{2})(?P<minute>\d{2})Z"
                      r"(?:_RESEND)?\.csv"),
            natural_key=("movement_id",), cursor=None,
            description="Goods movements, a file per hour (or shorter period, named after its "
                        "first minute): receipts, issues to production, put-away, "
                        "transfers (local times; Chinese material texts).",
            fields=(
                F("movement_id", required=True), F("movement_type", required=True),
                F("event_time", "timestamp", required=True), F("site", required=True),
                F("material", required=True), F("material_desc"), F("lot"),
                F("qty", "numeric", required=True), F("unit", required=True),
                F("from_loc"), F("to_loc"), F("reference"),
            ),
        ),
        Entity(
            name="cycle_counts",
            endpoint=r"WMS_CYCLECOUNT_[A-Z0-9]+_(?P<day>\d{8})\.csv",
            natural_key=("count_id",), cursor=None,
            description="Daily cycle counts per material: book vs counted quantity.",
            fields=(
                F("count_id", required=True), F("site", required=True),
                F("count_date", "date", required=True), F("counted_time", "timestamp"),
                F("material", required=True), F("material_desc"), F("unit", required=True),
                F("book_qty", "numeric", required=True),
                F("counted_qty", "numeric", required=True),
            ),
        ),
    ),
)
