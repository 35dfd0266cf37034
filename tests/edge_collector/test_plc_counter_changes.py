"""The Modbus path's staging models against the truth: the readings the collector published (the
stepped fixture: every shift boundary, every hour, both sides of each listed rollover) land in
raw_mqtt.messages as the MQTT ingest lands them (one row per message_id), and
stg_mqtt__plc_counter_changes, built by dbt with its tests and its rollover unit test, gives per
machine × shift the pieces the truth lists — across all 16 counter rollovers of the small plant,
which the rule corrects, none flagged; the state changes are the MES states at their readings."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import psycopg
import pytest
from _edge_gateway import by_machine, epoch
from _pipeline import dbt_build_selected
from _world import mes_states, truth
from plant_sim.systems.shopfloor import STATE_CODES
from psycopg.rows import dict_row

MODEL = "stg_mqtt__plc_counter_changes"
STATES = "stg_mqtt__plc_state_changes"
BATCH = "edge-collector-test"


@pytest.fixture(scope="module")
def landed(stepped: dict[str, Any], warehouse_dsn: str) -> dict[str, Any]:
    """The subscriber's deliveries in raw as the ingest lands them (a redelivered message id
    once), the staging model built; the rows removed afterwards."""
    from factory_platform.extract.mqtt import ensure_tables

    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        ensure_tables(conn)  # the ingest's own table (the bootstrap has made it already)
        conn.execute("delete from raw_mqtt.messages where kind = 'plc'")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into raw_mqtt.messages (message_id, topic, kind, machine_code, "
                "event_time, payload, _batch_id) values (%s, %s, 'plc', %s, %s, %s, %s) "
                "on conflict (message_id) do nothing",
                [(m["message_id"], m["topic"], m["machine_code"], m["event_time"],
                  json.dumps({k: v for k, v in m.items() if k != "topic"}), BATCH)
                 for m in stepped["messages"]])
        landed = conn.execute("select count(*) from raw_mqtt.messages where kind = 'plc'"
                              ).fetchone()[0]
    try:
        result = dbt_build_selected([MODEL, STATES])
        yield {"raw_rows": landed, "dbt": result.stdout}
    finally:
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            conn.execute("delete from raw_mqtt.messages where _batch_id = %s", (BATCH,))


def changes(dsn: str, model: str = MODEL) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"select * from staging.{model} order by machine_code, changed_at"
                           ).fetchall()


def test_raw_holds_each_reading_once(landed: dict[str, Any], stepped: dict[str, Any]) -> None:
    assert landed["raw_rows"] == len(stepped["published"])
    for unit_test in ("plc_counter_rollover_rule", "plc_state_changes_from_readings"):
        assert unit_test in landed["dbt"]


def test_increments_per_shift_equal_the_truth(landed: dict[str, Any], warehouse_dsn: str,
                                              small_world) -> None:
    """Σ increment of the changes in (shift start, shift end] = the truth's pieces, for good,
    scrap, rework and total, every machine and shift."""
    rows = changes(warehouse_dsn)
    assert rows and {r["signal_path"] for r in rows} == {"modbus"}
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_key[(r["machine_code"], r["counter"])].append(r)
    checked = 0
    for s in truth(small_world, "machine_counter_shift"):
        a, b = epoch(s["shift_start_at"]), epoch(s["shift_end_at"])
        want = {"good": int(s["good_count"]), "scrap": int(s["scrap_count"]),
                "rework": int(s["rework_count"]),
                "total": int(s["total_count_end"]) - int(s["total_count_start"])}
        for counter, pieces in want.items():
            got = sum(r["increment"] or 0 for r in by_key[(s["machine_code"], counter)]
                      if a < r["changed_at"].timestamp() <= b)
            assert got == pieces, (s["machine_code"], s["shift_start_at"], counter)
            checked += 1
    assert checked == 4 * 3 * 3 * 4


def test_every_rollover_is_corrected_none_flagged(landed: dict[str, Any], warehouse_dsn: str,
                                                  small_world) -> None:
    """The rule finds exactly the truth's 16 rollovers (counter, machine, the second holding the
    wrapping piece), each with a positive increment; no reading is flagged backwards."""
    rows = changes(warehouse_dsn)
    names = {"GoodCount": "good", "ScrapCount": "scrap", "ReworkCount": "rework",
             "TotalCount": "total"}
    want = set()
    for r in truth(small_world, "plc_counters"):
        at = epoch(r["rollover_at"])
        want.add((r["machine_code"], names[r["counter"]], int(at) + (at != int(at))))
    got = {(r["machine_code"], r["counter"], int(r["changed_at"].timestamp()))
           for r in rows if r["is_rollover"]}
    assert got == want and len(got) == 16
    assert all(r["increment"] > 0 and r["value"] < 1000 for r in rows if r["is_rollover"])
    assert not [r for r in rows if r["status"] != "good" or r["is_counter_reset"]]
    first = [r for r in rows if r["increment"] is None]
    assert len(first) == 4 * 4  # each counter's first reading: no increment


def test_state_changes_are_the_mes_states_at_their_readings(
        landed: dict[str, Any], warehouse_dsn: str, small_world, stepped: dict[str, Any]) -> None:
    """Each state change the PLC readings show is the MES interval's state at that reading;
    between two changes every reading has the same state (nothing dropped, no change invented)."""
    rows = changes(warehouse_dsn, STATES)
    assert rows and {r["signal_path"] for r in rows} == {"modbus"}
    assert all(r["state"] is not None for r in rows)
    states = mes_states(small_world)
    readings = by_machine(stepped["messages"])
    for r in rows:
        t = r["changed_at"].timestamp()
        iv = next((s for s in states[r["machine_code"]]
                   if epoch(s["start_at"]) <= t < epoch(s["end_at"])), None)
        if iv is not None:
            assert r["state"] == iv["state"], (r["machine_code"], r["changed_at"])
    for machine, at in readings.items():
        mine = sorted((r["changed_at"].timestamp(), r["state"]) for r in rows
                      if r["machine_code"] == machine)
        for t, msg in at.items():
            current = [state for since, state in mine if since <= t][-1]
            assert msg["registers"]["state_code"] == STATE_CODES[current], (machine, t)
