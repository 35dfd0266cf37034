"""The Modbus path end to end into the conformed layer, on the acceptance plant (default.toml,
seed 42: 12 machines, 3 PLCs) with the collector's shipped gateway.toml: a production day's
readings (every shift boundary, every hour; the day of the DST change, with PLC counter
rollovers in it) land in raw_mqtt.messages as the ingest lands them, and
fct_machine_signal_shift (signal_path modbus) counts per machine × shift the pieces the truth
lists — good, scrap, rework and total, the rollovers corrected by the staging rule."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from _edge_gateway import INCLUDE, INSTANCE, RunningCollector, Subscriber, wait
from _pipeline import dbt_build_selected

DAY = "2026-10-25"  # the DST change: S3 lasts 9 h; 7 PLC counters roll over that day
BATCH = "edge-collector-conformed-test"


def rows(dsn: str, sql: str, *params: Any) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def modbus_built(plant: Any, broker: Any, warehouse_dsn: str, tmp_path_factory) -> dict:
    """The plant's PLCs (its world, a stopped live clock stepped through the day) polled by the
    collector with the package's gateway.toml (ports of this test instance); the readings in
    raw, the EAM's equipment extracted, +fct_machine_signal_shift built."""
    from factory_platform.extract.run import extract_interval
    from plant_sim.runtime import Runtime

    shifts = rows(warehouse_dsn, "select shift_start_at::timestamptz, shift_end_at::timestamptz "
                                 "from truth.shift_calendar where production_date::date = %s "
                                 "order by 1", DAY)
    first, last = int(shifts[0][0].timestamp()), int(shifts[-1][1].timestamp())
    instants = sorted(set(range(first, last + 1, 3600))
                      | {int(t.timestamp()) for s in shifts for t in s})
    rt = Runtime(plant.world, mes_port=0, qms_port=None, clock_mode="live", speed=0.0,
                 modbus_port=INSTANCE.modbus_port)
    rt.start()
    rt.clock.start = first
    sub = Subscriber(broker, "edge-test-conformed")
    gateway = tmp_path_factory.mktemp("gw") / "gateway.toml"
    text = (INCLUDE / "edge_collector" / "gateway.toml").read_text()
    gateway.write_text(text.replace("poll_interval_s = 1.0", "poll_interval_s = 0.02"))
    (gateway.parent / "register_map.toml").write_text(
        (INCLUDE / "edge_collector" / "register_map.toml").read_text())
    running = RunningCollector(gateway, broker.password,
                               {"plc_port": INSTANCE.modbus_port, "mqtt_port": broker.port,
                                "client_id": "edge-test-conformed-gw"})
    c = running.collector
    machines = [m for d in c.cfg.devices for m in d.machines]
    try:
        for t in instants:
            rt.clock.start = t
            wait(lambda t=t: all(c.last_instant.get(m) == t for m in machines), 10,
                 f"a reading of every machine at {t}")
    finally:
        running.stop()
        rt.stop()
    wait(lambda: {m["message_id"] for m in sub.messages()} >= set(c.published_ids), 20,
         "every reading received")
    msgs = sub.settle(0.3)
    sub.close()
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("delete from raw_mqtt.messages where kind = 'plc'")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into raw_mqtt.messages (message_id, topic, kind, machine_code, "
                "event_time, payload, _batch_id) values (%s, %s, 'plc', %s, %s, %s, %s) "
                "on conflict (message_id) do nothing",
                [(m["message_id"], m["topic"], m["machine_code"], m["event_time"],
                  json.dumps({k: v for k, v in m.items() if k != "topic"}), BATCH)
                 for m in msgs])
    start = datetime.fromtimestamp(first, UTC)
    extract_interval("eam", "equipment", start - timedelta(days=60), plant.end,
                     dsn=warehouse_dsn)
    started = time.monotonic()
    # models only: the staging models' tests run in test_plc_counter_changes.py
    dbt_build_selected(["+fct_machine_signal_shift"], "--exclude", "test_type:data")
    print(f"\nmodbus → conformed: {len(instants)} instants × {len(machines)} machines, "
          f"{c.status()}, dbt {time.monotonic() - started:.0f} s")
    try:
        yield {"shifts": shifts, "machines": machines, "instants": len(instants),
               "published": len(c.published_ids)}
    finally:
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            conn.execute("delete from raw_mqtt.messages where _batch_id = %s", (BATCH,))


@pytest.mark.slow
def test_pieces_per_machine_and_shift_equal_the_truth(modbus_built: dict,
                                                      warehouse_dsn: str) -> None:
    assert modbus_built["published"] == len(modbus_built["machines"]) * modbus_built["instants"]
    signal = {(m, s): v for m, s, *v in rows(
        warehouse_dsn, "select machine_code, shift_code, good_count, scrap_count, rework_count, "
                       "total_count from conformed.fct_machine_signal_shift "
                       "where signal_path = 'modbus' and production_date = %s", DAY)}
    truth = {(m, s): v for m, s, *v in rows(
        warehouse_dsn, "select machine_code, shift_code, good_count::int, scrap_count::int, "
                       "rework_count::int, total_count_end::int - total_count_start::int "
                       "from truth.machine_counter_shift where production_date::date = %s", DAY)}
    assert len(truth) == 12 * 3
    assert {k: tuple(v) for k, v in signal.items()} == {k: tuple(v) for k, v in truth.items()}
    rolled = rows(warehouse_dsn, "select count(*) from truth.plc_counters where "
                                 "rollover_at::timestamptz > %s and rollover_at::timestamptz <= %s",
                  modbus_built["shifts"][0][0], modbus_built["shifts"][-1][1])[0][0]
    corrected = rows(warehouse_dsn, "select count(*) from staging.stg_mqtt__plc_counter_changes "
                                    "where is_rollover")[0][0]
    assert corrected == rolled >= 5
    flagged = rows(warehouse_dsn, "select count(*) from staging.stg_mqtt__plc_counter_changes "
                                  "where status <> 'good'")[0][0]
    assert flagged == 0
