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

SCADA historian: hourly exports of tag values and alarms (see the plant's SCADA docs).

UTF-8, `;`, LF, header; timestamps UTC with `Z` (`timestamptz`). Files are dropped 2 minutes
after their hour ends. Tag values are the volume source (one row per machine × tag × minute;
~26 M rows per plant-month at scale) and load by the historian fast path (`load=copy`): the
file's bytes go straight to COPY.
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.sources import Entity, Source

SOURCE = Source(
    system="scada",
    title="SCADA historian — tag values per machine and minute, alarms",
    interface="csv_drop",
    conn_id="scada_drops",
    schedule_cron="0 * * * *",
    change_feed="inbox",  # a settled file in the inbox starts a run (change_triggers)
    lookback=timedelta(hours=3),
    entities=(
        Entity(
            name="tag_values",
            endpoint=r"SCADA_TAGS_[A-Z0-9]+_(?P<hour>\d{8}T\d{2})00Z\.csv",
            natural_key=("machine_code", "tag", "ts"), cursor=None,
            description="Historian samples: temperature, pressure, vibration, power, counter "
                        "(and aux tags) per machine and minute.",
            options=(("load", "copy"),),
            fields=(
                F("ts", "timestamptz", required=True), F("machine_code", required=True),
                F("tag", required=True), F("value", "numeric", required=True), F("quality"),
            ),
        ),
        Entity(
            name="alarms",
            endpoint=r"SCADA_ALARMS_[A-Z0-9]+_(?P<hour>\d{8}T\d{2})00Z\.csv",
            natural_key=("machine_code", "alarm_code", "raised_at"), cursor=None,
            description="Alarms raised per machine (one per unplanned stop), bilingual texts.",
            fields=(
                F("raised_at", "timestamptz", required=True),
                F("cleared_at", "timestamptz"), F("machine_code", required=True),
                F("alarm_code", required=True), F("text_en"), F("text_zh"), F("priority"),
            ),
        ),
    ),
)
