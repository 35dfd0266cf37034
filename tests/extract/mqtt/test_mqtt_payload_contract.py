"""The numbers of an MQTT payload that the staging models cast are checked by the ingest
(sources.mqtt.PAYLOAD_INTEGERS): a message whose number would break its model's cast is
quarantined instead of failing every build. Fast: no broker, no database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from factory_platform.extract.mqtt import Message, Refused, parse_message
from factory_platform.sources.mqtt import PAYLOAD_INTEGERS

STAGING = Path(__file__).resolve().parents[3] / "dbt_project" / "models" / "staging" / "mqtt"
MACHINE = "ENT/ERF/ERF-MACH/ERF-L1/ERF-L1-M01"
SQL_BITS = {"integer": 32, "bigint": 64}


def message(kind: str, **fields) -> Message | Refused:
    body = {"message_id": f"{kind}-1", "event_time": "2026-10-24T04:00:00Z", **fields}
    return parse_message(f"{MACHINE}/{kind}", json.dumps(body).encode())


@pytest.mark.parametrize(("kind", "fields", "reason"), [
    ("counter", {"value": "12abc"}, 'counter payload: value "12abc" is not a 64-bit integer'),
    ("counter", {"value": 5.0}, "counter payload: value 5.0 is not a 64-bit integer"),
    ("counter", {"value": 1, "total": 2 ** 63},
     "counter payload: total 9223372036854775808 is not a 64-bit integer"),
    ("state", {"state_code": 2 ** 31}, "state payload: state_code 2147483648 is not a 32-bit integer"),
    ("state", {"state_code": True}, "state payload: state_code true is not a 32-bit integer"),
    ("plc", {"registers": [1, 2]}, "plc payload: registers is not a JSON object"),
    ("plc", {"registers": {"scrap_count": "7"}},
     'plc payload: registers.scrap_count "7" is not a 64-bit integer'),
    ("plc", {"registers": {"reason_code": -(2 ** 31) - 1}},
     "plc payload: registers.reason_code -2147483649 is not a 32-bit integer"),
])
def test_a_number_no_cast_would_take_is_refused_with_its_field(kind, fields, reason):
    refused = message(kind, **fields)
    assert isinstance(refused, Refused) and refused.reason == reason


@pytest.mark.parametrize(("kind", "fields"), [
    ("counter", {"counter": "good", "increment": 1, "value": 2 ** 63 - 1, "total": -(2 ** 63)}),
    ("counter", {"counter": "good", "value": None}),  # null casts to null
    ("state", {"state": "RUN", "state_code": 2 ** 31 - 1}),
    ("plc", {"registers": {"good_count": 4_294_967_295, "state_code": 0, "temperature": 26.5,
                           "speed_pph": 118.25}}),  # scaled registers: no model casts them
    ("alarm", {"alarm_code": "A17", "priority": 2.5}),  # alarms have no cast number
])
def test_the_edges_of_each_type_and_the_uncast_numbers_land(kind, fields):
    landed = message(kind, **fields)
    assert isinstance(landed, Message) and landed.kind == kind


def test_the_contract_lists_every_number_the_staging_models_cast():
    """Read from the models' SQL: each `(payload ->> 'f')::type` and each PLC register of the
    counter model's list is in PAYLOAD_INTEGERS with its type's bits, and nothing else is."""
    cast = re.compile(r"\(\s*(?:source\.)?payload\s*(?:->\s*'(\w+)'\s*)?->>\s*'(\w+)'\s*\)::(bigint|integer)")
    found: dict[str, dict[str, int]] = {}
    for path in sorted(STAGING.glob("stg_mqtt__*.sql")):
        sql = path.read_text()
        kind = re.search(r"kind\s*=\s*'(\w+)'", sql)[1]
        for obj, name, sql_type in cast.findall(sql):
            found.setdefault(kind, {})[f"{obj}.{name}" if obj else name] = SQL_BITS[sql_type]
        if "counters.register_name)::bigint" in sql:
            registers = re.search(r"values(.*?)\)\s*as counter_registers", sql, re.DOTALL)[1]
            for register in re.findall(r"\('\w+', '(\w+)'\)", registers):
                found.setdefault(kind, {})[f"registers.{register}"] = 64
    assert found == PAYLOAD_INTEGERS
