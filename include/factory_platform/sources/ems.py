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

EMS: hourly energy-meter exports, kWh per machine and 15 minutes (see the plant's EMS docs).

UTF-8, `;`, LF, header; interval bounds are local ISO 8601 **with** offset (`timestamptz`).
Files are dropped 5 minutes after their hour; a file cut off mid-row is quarantined whole.
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.sources import Entity, Source

SOURCE = Source(
    system="ems",
    title="EMS — energy meter readings (kWh per machine and 15 minutes)",
    interface="csv_drop",
    conn_id="ems_drops",
    schedule_cron="0 * * * *",
    change_feed="inbox",  # a settled file in the inbox starts a run (change_triggers)
    lookback=timedelta(hours=3),
    entities=(
        Entity(
            name="meter_readings",
            endpoint=r"EMS_READINGS_[A-Z0-9]+_(?P<hour>\d{8}T\d{2})00Z\.csv",
            natural_key=("meter_id", "interval_start"), cursor=None,
            description="Energy per meter (one per machine) and 15-minute interval, in kWh.",
            fields=(
                F("meter_id", required=True), F("machine_code", required=True),
                F("interval_start", "timestamptz", required=True),
                F("interval_end", "timestamptz", required=True),
                F("kwh", "numeric", required=True, minimum=0),
            ),
        ),
    ),
)
