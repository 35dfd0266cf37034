"""SCADA historian: hourly exports of tag values and alarms (see the plant's SCADA docs).

UTF-8, `;`, LF, header; timestamps UTC with `Z` (`timestamptz`). Files are dropped 2 minutes
after their hour ends. Tag values are the volume source (one row per machine × tag × minute;
~26 M rows per plant-month at scale) and load by the historian fast path (`load=copy`): the
file's bytes go straight to COPY.
"""

from datetime import timedelta

from factory_platform.extract.fields import Field as F
from factory_platform.sources import Entity, Source

SOURCE = Source(
    system="scada",
    title="SCADA historian — tag values per machine and minute, alarms",
    interface="csv_drop",
    conn_id="scada_drops",
    schedule_cron="0 * * * *",
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
