"""
### extract_mqtt — machine events of the unified namespace (MQTT) in `raw_mqtt.messages`

The plant's machines publish state changes, counter increments and alarms (and the Modbus edge
collector its PLC readings) to the broker, topic
`<enterprise>/<site>/<area>/<line>/<machine>/<kind>`, JSON payloads with `message_id` and
`event_time`, QoS 1. A stream is not read by a scheduled task: the **MQTT ingest**
(`python -m factory_platform.extract.mqtt_ingest`, started with the platform) holds a durable
session (client id per environment, persistent session, QoS 1, connection `plant_mqtt`) and
lands micro-batches of ≤ 200 ms in `raw_mqtt.messages`, one row per `message_id`, acknowledging
each message to the broker only after its batch committed.

* **Exactly once into raw:** `insert … on conflict (message_id) do nothing` — a redelivery after
  a consumer crash or a broker restart, a message the plant published twice: counted as
  duplicates in `ops.load_audit`, never landed twice. Nothing the broker accepted is lost.
* **Bad messages:** over the payload limit (1 MiB), not UTF-8 or not JSON, no `message_id`, a
  bad `event_time`, a number the staging models read that is not an integer of its type
  (`PAYLOAD_INTEGERS`), a value PostgreSQL refuses, a `message_id` reused for another payload →
  `ops.quarantine` with the topic and the reason, once; the stream goes on.
* **This DAG** (every 15 minutes) is the safety net and the trigger: a scheduled run fails
  (incident `ingest_down`) when no ingest has reported for 2 minutes (or none ever did) or the
  one that reports has not been subscribed to the broker for 2 minutes (a refused login: the
  broker's reason in the error); it sums what landed in its interval from the load audit (one
  row per minute of ingest) and emits the raw table's asset, which schedules `transform_dbt`.
  A reload or backfill re-reads nothing (the broker is no history) and judges no ingest: it
  reports what raw holds for the window.

Source registry: `include/factory_platform/sources/mqtt.py`; the client and the raw table:
`include/factory_platform/extract/mqtt.py`.
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.sources import Entity, Source

# The numbers the staging models read of each kind's payload (`(payload ->> …)::bigint`), field →
# bits of the SQL type they are cast to (`registers.good_count`: a member of the object
# `registers`). A payload whose listed field is there but not a JSON integer in that range is
# quarantined by the ingest: landed, it would break its staging model's cast and so the whole
# build. (A PLC's scaled registers, temperature and speed, are numbers no model casts.)
PAYLOAD_INTEGERS: dict[str, dict[str, int]] = {
    "state": {"state_code": 32},
    "counter": {"value": 64, "increment": 64, "total": 64},
    "plc": {**{f"registers.{c}_count": 64 for c in ("good", "scrap", "rework", "total")},
            "registers.state_code": 32, "registers.reason_code": 32},
}

SOURCE = Source(
    system="mqtt",
    title="Shop floor MQTT — machine states, counters, alarms and PLC readings (unified namespace)",
    interface="mqtt",
    conn_id="plant_mqtt",
    schedule_cron="*/15 * * * *",
    lookback=timedelta(0),
    # one durable session per environment: two subscribers with one client id take the
    # session from each other
    max_connections=1,
    task_timeout=timedelta(minutes=5),
    entities=(
        Entity(
            name="messages", endpoint="ENT/#",
            natural_key=("message_id",), cursor="event_time",
            description="MQTT messages of the unified namespace, one per message_id (landed by "
                        "the MQTT ingest, exactly once).",
            fields=(
                F("message_id", required=True, description="The publisher's message id "
                  "(primary key: the exactly-once dedupe)."),
                F("topic", required=True, description="Topic, <enterprise>/<site>/<area>/"
                  "<line>/<machine>/<kind>."),
                F("kind", required=True, description="The topic's last level: state, counter, "
                  "alarm (machines), plc (the Modbus edge collector)."),
                F("machine_code", description="Machine (the payload's machine_code, else the "
                  "topic's machine level)."),
                F("event_time", "timestamptz", required=True, description="When the event "
                  "happened (the payload's event_time, UTC)."),
                F("payload", "json", required=True, description="The message's JSON payload."),
                F("received_at", "timestamptz", required=True, description="When the ingest "
                  "wrote the row (its micro-batch committed within milliseconds)."),
            ),
        ),
    ),
)
