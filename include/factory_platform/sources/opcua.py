"""
### extract_opcua — the shop floor's OPC UA server into `raw_opcua.*`

Every 15 minutes (UTC data intervals) the OPC UA server of connection `plant_opcua` is browsed
once (its ISA-95 tree: enterprise / site / area / line / machine / tags) and every tag's
history is read with **HistoryRead raw** for the run's interval plus a 30-minute lookback, in
requests of many nodes (continuation points followed), then COPY-loaded into
`raw_opcua.tag_values`: one row per machine × tag × source timestamp, with its value and its
**OPC UA status code** (number and name).

* **Idempotent, backfill-safe:** a run replaces exactly the rows whose source timestamp lies in
  its window. History is append-only: an answer that lacks values raw already holds for the
  window (the server's retention has moved past it, or an answer came back short) is refused
  and replaces nothing.
* **Bad quality** (the rule): a value whose status is not Good is never silently used.
  Analog values (floating point: Temperature, Speed) land with their status; staging flags
  them (`is_good_quality`) and the aggregates leave their values out. Discrete values
  (integers and strings: counters, state, reason, operation) with a status that is not Good
  go to `ops.quarantine` with the status as the reason: a cumulative counter's next good
  reading carries the pieces of a reading left out, and the machine keeps its last good state.
* **Nothing lost:** every value read is in raw or in `ops.quarantine`; every batch is counted
  in `ops.load_audit`.
* **Assets:** the raw table is an Airflow asset; `transform_dbt` runs when it updates.

Source registry: `include/factory_platform/sources/opcua.py`; client: `extract/opcua.py`.

OPC UA (IEC 62541) server of the shop floor, historizing every tag.

The connection holds the endpoint (`opcua://<host>:<port>/<path>` → `opc.tcp://host:port/path`)
and, in its extra, the namespace URI and the browse root under `Objects` (`root`, the
enterprise folder), and the security settings (`security_policy`, `security_mode`,
`certificate`, `private_key`, `server_certificate`; see `extract/opcua.py`). The simulator
serves security None, anonymous; a plant server Basic256Sha256 with Sign & Encrypt and a user
(the connection's login and password).
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.sources import Entity, Source

SOURCE = Source(
    system="opcua",
    title="Shop-floor OPC UA server — tag history (states, counters, process values)",
    interface="opcua",
    conn_id="plant_opcua",
    schedule_cron="*/15 * * * *",
    lookback=timedelta(minutes=30),
    catchup_slice=timedelta(hours=2),
    entities=(
        Entity(
            name="tag_values",
            endpoint="*",  # every tag below the browse root; or a comma-separated tag list
            natural_key=("machine_code", "tag", "source_at"), cursor="source_at",
            description="Tag history from HistoryRead raw: one row per machine × tag × source "
                        "timestamp, with the value and its OPC UA status code.",
            fields=(
                F("source_at", "timestamptz", required=True,
                  description="Source timestamp of the value (UTC): when it changed at the machine."),
                F("machine_code", required=True,
                  description="The machine (ISA-95 work unit): the tag's parent object."),
                F("tag", required=True, description="Tag (browse name), e.g. State, GoodCount."),
                F("site_code", description="Site: the second level of the browse path."),
                F("area_code", description="Area: the third level of the browse path."),
                F("line_code", description="Line (work center): the fourth level of the browse path."),
                F("node_id", required=True,
                  description="The variable's NodeId with its namespace URI (nsu=…;s=…)."),
                F("browse_path", description="Browse path below Objects, `/`-separated."),
                F("value_type", description="OPC UA built-in type of the value (String, UInt64, Double …)."),
                F("value_text", description="The value, when it is a string."),
                F("value_numeric", "numeric", description="The value, when it is a number."),
                F("status_code", "int", required=True, minimum=0,
                  description="OPC UA status code (32-bit; 0 = Good)."),
                F("status", required=True,
                  description="Name of the status code (Good, BadSensorFailure, …)."),
                F("server_at", "timestamptz", description="Server timestamp of the value (UTC)."),
            ),
        ),
    ),
)
