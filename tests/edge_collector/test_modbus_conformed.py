"""The Modbus path end to end into the conformed layer, on the acceptance plant (default.toml,
seed 42: 12 machines, 3 PLCs) with the collector's shipped gateway.toml: a production day's
readings (every shift boundary, every hour; the day of the DST change, with PLC counter
rollovers in it) go through the broker to the platform's MQTT ingest (its own process, the
environment's `plant_mqtt` connection), which lands each once in raw_mqtt.messages, and
fct_machine_signal_shift (signal_path modbus) counts per machine × shift the pieces the truth
lists — good, scrap, rework and total, the rollovers corrected by the staging rule."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _edge_gateway import INCLUDE, INSTANCE, RunningCollector, plc_runtime, wait
from _pipeline import dbt_build_selected

DAY = "2026-10-25"  # the DST change: S3 lasts 9 h; 7 PLC counters roll over that day


def rows(dsn: str, sql: str, *params: Any) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def plc_ids(dsn: str) -> set[str]:
    return {r[0] for r in rows(dsn, "select message_id from raw_mqtt.messages "
                                    "where kind = 'plc'")}


def collect(world: Path, broker: Any, instants: list[int]) -> list[str]:
    """Step the plant's PLCs (its world on a stopped live clock) through `instants`, the
    collector polling every 20 ms with the package's gateway.toml (this instance's ports).
    Returns the message ids it published (every one acknowledged by the broker)."""
    rt = plc_runtime(world, float(instants[0]), speed=0.0)
    running = RunningCollector(INCLUDE / "edge_collector" / "gateway.toml", broker.password,
                               {"plc_port": INSTANCE.modbus_port, "mqtt_port": broker.port,
                                "client_id": "edge-test-conformed-gw", "poll_interval_s": 0.02})
    c = running.collector
    machines = [m for d in c.cfg.devices for m in d.machines]
    assert len(machines) == 12
    try:
        for t in instants:
            rt.clock.start = t
            wait(lambda t=t: all(c.last_read.get(m) == t for m in machines), 10,
                 f"a reading of every machine at {t}")
    finally:
        running.stop()
        rt.stop()
    status = c.status()
    assert status["published"] == status["acked"] == len(c.published_ids), status
    assert status["published"] + status["unchanged"] == len(instants) * 12, status
    return list(c.published_ids)


@pytest.fixture(scope="module")
def modbus_built(plant: Any, broker: Any, warehouse_dsn: str,
                 tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The day's readings published, landed by the MQTT ingest, the EAM's equipment
    extracted, +fct_machine_signal_shift built."""
    from factory_platform.extract.run import extract_interval

    shifts = rows(warehouse_dsn, "select shift_start_at::timestamptz, shift_end_at::timestamptz "
                                 "from truth.shift_calendar where production_date::date = %s "
                                 "order by 1", DAY)
    first, last = int(shifts[0][0].timestamp()), int(shifts[-1][1].timestamp())
    instants = sorted(set(range(first, last + 1, 3600))
                      | {int(t.timestamp()) for s in shifts for t in s})
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("delete from raw_mqtt.messages where kind = 'plc'")
        since = conn.execute("select clock_timestamp()").fetchone()[0]
    ingest_log = tmp_path_factory.mktemp("ingest") / "mqtt-ingest.log"
    with open(ingest_log, "wb") as out:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "factory_platform.extract.mqtt_ingest"],
            env={**os.environ, "PYTHONPATH": str(INCLUDE)}, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def subscribed() -> bool:
        # this ingest's session (an earlier one's row may still say connected), connected once
        # its SUBACK granted QoS 1; an ingest that exited says why at once, not after the timeout
        assert ingest.poll() is None, f"the MQTT ingest exited: {ingest_log.read_text()[-3000:]}"
        return rows(warehouse_dsn, "select coalesce(bool_or(connected), false) from "
                                   "raw_mqtt.ingest_session where pid = %s", ingest.pid)[0][0]

    started = time.monotonic()
    try:
        try:
            wait(subscribed, 60, "the MQTT ingest subscribes")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{ingest_log.read_text()[-3000:]}") from None
        published = collect(plant.world, broker, instants)
        wait(lambda: len(plc_ids(warehouse_dsn)) >= len(published), 60,
             "the ingest lands every reading")
        time.sleep(1.0)  # nothing more arrives
    finally:
        ingest.terminate()
        ingest.wait(timeout=30)
    landed = plc_ids(warehouse_dsn)
    quarantined = rows(warehouse_dsn, "select count(*) from ops.quarantine where system = 'mqtt' "
                                      "and quarantined_at >= %s", since)[0][0]
    collected = time.monotonic() - started
    extract_interval("eam", "equipment", datetime.fromtimestamp(first, UTC) - timedelta(days=60),
                     plant.end, dsn=warehouse_dsn)
    started = time.monotonic()
    # models only: the staging models' tests run in test_plc_counter_changes.py
    dbt_build_selected(["+fct_machine_signal_shift"], "--exclude", "test_type:data")
    print(f"\nmodbus → ingest → conformed: {len(instants)} instants × 12 machines = "
          f"{len(published)} readings, {len(landed)} landed in {collected:.0f} s; "
          f"dbt {time.monotonic() - started:.0f} s")
    try:
        yield {"shifts": shifts, "published": published, "landed": landed,
               "quarantined": quarantined}
    finally:
        # the shared warehouse as found: no readings, and no heartbeat of this ingest, which
        # goes stale and fails extract_mqtt's check in a later module, nor its audit rows
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            conn.execute("delete from raw_mqtt.messages where kind = 'plc'")
            conn.execute("delete from raw_mqtt.ingest_session where pid = %s", (ingest.pid,))
            conn.execute("delete from ops.load_audit where system = 'mqtt' and started_at >= %s",
                         (since,))


@pytest.mark.slow
def test_every_reading_landed_once(modbus_built: dict) -> None:
    assert modbus_built["landed"] == set(modbus_built["published"])
    assert modbus_built["quarantined"] == 0
    assert len(modbus_built["published"]) == len(set(modbus_built["published"]))


@pytest.mark.slow
def test_pieces_per_machine_and_shift_equal_the_truth(modbus_built: dict,
                                                      warehouse_dsn: str) -> None:
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
    # a PLC knows no MES operation: every piece is one without, so the path has no PRI (and
    # mart_oee_shift_by_signal_path no effectiveness or OEE for it)
    unattributed = rows(warehouse_dsn, "select sum(pieces_without_operation_count), "
                                       "sum(good_count + scrap_count + rework_count), "
                                       "sum(pri_seconds) from conformed.fct_machine_signal_shift "
                                       "where signal_path = 'modbus' and production_date = %s",
                        DAY)[0]
    assert unattributed[0] == unattributed[1] > 0 and unattributed[2] == 0
