"""The Modbus edge collector against the plant's truth: it polls the small plant's PLCs (the
plant's real Modbus TCP server) and publishes to a private mosquitto; a durable subscriber
receives what it published.

- Stepped: the plant clock is moved through chosen instants (every shift boundary, every
  hour, a second before and at every listed counter rollover); at each, the collector's polls
  publish one reading per machine. The decoded registers equal the truth (counters = (preset +
  the truth's cumulative pieces) mod 2^32 at every shift end; the state code is the MES
  interval's), each instant is published once (re-polls of a stopped clock are not), and the
  subscriber receives exactly what was published.
- A broker restart mid-stream (running clock): every reading published is received, none
  lost (the outbound queue and the persistent sessions).
- The command `make run` starts: the password from the environment only, SIGTERM drains and
  exits 0.
The readings through the staging model's rollover rule: test_plc_counter_changes.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from _edge_gateway import (
    INCLUDE,
    INSTANCE,
    MACHINES,
    FakePlc,
    RunningCollector,
    Subscriber,
    by_machine,
    epoch,
    gateway_file,
    known_at,
    plc_runtime,
    wait,
)
from _world import mes_states, truth
from plant_sim.systems.shopfloor import STATE_CODES

ROLLOVER = 1 << 32


def test_every_instant_read_once_published_on_change_and_received(
        stepped: dict[str, Any]) -> None:
    """Each machine is read at every instant; a reading is published unless its registers equal
    the machine's last published ones within the 60 s heartbeat (report by exception); a re-poll
    of the same instant is never published; the subscriber receives exactly what was
    published."""
    instants, msgs, status = stepped["instants"], stepped["messages"], stepped["status"]
    published = stepped["published"]
    assert len(published) == len(set(published))
    assert status["published"] + status["unchanged"] == len(instants) * len(MACHINES)
    assert status["readings"] == status["published"] + status["unchanged"] + status["repeats"]
    assert status["published"] == status["acked"] == len(published)
    assert status["repeats"] > 0 and status["read_errors"] == 0 and status["refused"] == 0
    received = Counter(m["message_id"] for m in msgs)
    assert set(received) == set(published)
    assert {int(i.rsplit("-", 1)[1]) for i in published} <= set(instants)
    for at in by_machine(msgs).values():  # what was left out was unchanged, within the heartbeat
        ts = sorted(at)
        for a, b in itertools.pairwise(ts):
            assert at[a]["registers"] != at[b]["registers"] or b - a >= 60, (a, b)
    for m in msgs:
        t = int(epoch(m["event_time"]))
        assert m["message_id"] == f"{m['machine_code']}-plc-{t}"
        assert m["event_time"].endswith(".000Z") and m["kind"] == "plc"
        line = m["machine_code"][:6]
        assert m["topic"] == f"ENT/ERF/ERF-MACH/{line}/{m['machine_code']}/plc"
        assert m["device_id"] == int(line[-1])
        assert set(m["registers"]) == {"good_count", "scrap_count", "rework_count",
                                       "total_count", "state_code", "reason_code",
                                       "temperature_c", "speed_pph"}


def test_readings_decode_to_the_truth(stepped: dict[str, Any], small_world: Path) -> None:
    """At every shift end the counters a consumer knows (the last reading published) are
    (preset + the truth's cumulative pieces) mod 2^32;
    at every instant inside an MES state interval the state code is the interval's, speed > 0
    exactly while running, temperature a plausible °C."""
    readings = by_machine(stepped["messages"])
    presets = {(r["machine_code"], r["counter"]): int(r["preset"])
               for r in truth(small_world, "plc_counters")}
    cum: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    checked = 0
    for r in sorted(truth(small_world, "machine_counter_shift"), key=lambda r: r["shift_end_at"]):
        m = r["machine_code"]
        c = cum[m]
        for i, col in enumerate(("good_count", "scrap_count", "rework_count")):
            c[i] += int(r[col])
        got = known_at(readings[m], int(epoch(r["shift_end_at"])))
        want = {
            "good_count": (presets[(m, "GoodCount")] + c[0]) % ROLLOVER,
            "scrap_count": (presets[(m, "ScrapCount")] + c[1]) % ROLLOVER,
            "rework_count": (presets[(m, "ReworkCount")] + c[2]) % ROLLOVER,
            "total_count": (presets[(m, "TotalCount")] + int(r["total_count_end"])) % ROLLOVER,
        }
        assert {k: got[k] for k in want} == want, (m, r["shift_end_at"])
        checked += 1
    assert checked == 4 * 3 * 3
    states = mes_states(small_world)
    in_state = 0
    for m, at in readings.items():
        for t, msg in at.items():
            iv = next((s for s in states[m] if epoch(s["start_at"]) <= t < epoch(s["end_at"])),
                      None)
            if iv is None:
                continue
            regs = msg["registers"]
            assert regs["state_code"] == STATE_CODES[iv["state"]], (m, t)
            assert (regs["speed_pph"] > 0) == (iv["state"] == "running"), (m, t)
            assert 25.0 <= regs["temperature_c"] <= 65.0, (m, t)
            in_state += 1
    assert in_state > 0.9 * len(stepped["messages"])


def test_rollover_readings_wrap(stepped: dict[str, Any], small_world: Path) -> None:
    """Each listed rollover shows in the readings: 2^32 - 1 known the second before, 0 published
    at the second of the wrapping piece (the staging model's rule turns that into
    the true increment)."""
    readings = by_machine(stepped["messages"])
    names = {"GoodCount": "good_count", "ScrapCount": "scrap_count",
             "ReworkCount": "rework_count", "TotalCount": "total_count"}
    rolls = [r for r in truth(small_world, "plc_counters") if r["rollover_at"]]
    assert len(rolls) == 16
    for r in rolls:
        at = epoch(r["rollover_at"])
        after = int(at) if at == int(at) else int(at) + 1
        before = known_at(readings[r["machine_code"]], after - 1)[names[r["counter"]]]
        now = readings[r["machine_code"]][after]["registers"][names[r["counter"]]]  # a change
        assert before == ROLLOVER - 1 and now == 0, r


def test_broker_restart_loses_nothing(small_world: Path, broker: Any, subscriber: Subscriber,
                                      tmp_path: Path) -> None:
    """The plant clock runs (120×), the collector polls every 50 ms; the broker stops and starts
    again mid-stream. Every reading the collector published reaches the subscriber (its
    persistent session; the collector's outbound queue held what it read while the broker was
    away): message count = readings published (every poll's reading is published, unchanged
    or a repeat), no loss."""
    shifts = truth(small_world, "machine_counter_shift")
    start = dt.datetime.fromtimestamp(int(epoch(shifts[0]["shift_start_at"])) + 3600, dt.UTC)
    rt = plc_runtime(small_world, start.strftime("%Y-%m-%dT%H:%M:%SZ"), speed=120.0)
    running = RunningCollector(gateway_file(tmp_path, broker, 0.05, "edge-test-restart"),
                               broker.password)
    c = running.collector
    try:
        wait(lambda: c.publisher.acked >= 40, 20, "readings acknowledged before the restart")
        broker.stop()
        during = c.status()["published"]
        time.sleep(1.0)  # polls go on: readings wait in the outbound queue
        queued = c.status()["published"] - during
        broker.start()
        wait(lambda: c.status()["connects"] >= 2, 30, "the collector reconnects")
        time.sleep(1.0)
    finally:
        running.stop()
        rt.stop()
    status = c.status()
    assert queued >= 5, status  # of ~20 polls × 4 machines while the broker was down
    assert status["disconnects"] >= 1 and status["refused"] == 0, status
    assert status["published"] == status["acked"] == len(c.published_ids), status
    assert status["readings"] == status["published"] + status["unchanged"] + status["repeats"]
    wait(lambda: {m["message_id"] for m in subscriber.messages()} >= set(c.published_ids), 30,
         "every published reading received")
    msgs = subscriber.settle(0.3)
    assert {m["message_id"] for m in msgs} == set(c.published_ids)
    # and what came through the restart is in order: per machine, in PLC time, each reading's
    # total count is at or a few pieces above the one before (mod 2^32: no step backwards)
    for m, at in by_machine(msgs).items():
        values = [at[t]["registers"]["total_count"] for t in sorted(at)]
        assert all((b - a) % ROLLOVER < 1000 for a, b in itertools.pairwise(values)), m
    print(f"\nbroker restart: {status}, {queued} readings queued while it was down, "
          f"{len(msgs)} deliveries of {len(c.published_ids)} readings")


def test_launcher_command_reads_password_from_environment(small_world: Path, broker: Any,
                                                          subscriber: Subscriber,
                                                          tmp_path: Path) -> None:
    """The command `make run` starts (launcher.edge_collector_command: this instance's Modbus and
    MQTT ports, the small plant's gateway file): the password from EDGE_MQTT_PASSWORD (never
    argv, never the log), readings arrive, SIGTERM drains and exits 0 with its counts logged."""
    from launcher.__main__ import (
        EDGE_MQTT_USER,
        edge_collector_command,
        outside_environment,
    )

    shifts = truth(small_world, "machine_counter_shift")
    rt = plc_runtime(small_world, shifts[0]["shift_start_at"], speed=600.0)
    config = gateway_file(tmp_path, broker, 0.1, "unused")
    edge_password = broker.more_users[EDGE_MQTT_USER]
    args, edge_env = edge_collector_command(INSTANCE, {"MQTT_EDGE_PASSWORD": edge_password},
                                            config=config)
    assert edge_password not in " ".join(args)
    assert args[args.index("--mqtt-port") + 1] == str(broker.port)
    # as make run starts it: none of the platform's connections and passwords (this session's
    # environment has them: the warehouse's connections, the superuser's PGPASSWORD)
    env = {**outside_environment(dict(os.environ), edge_env), "PYTHONPATH": str(INCLUDE)}
    assert "PGPASSWORD" in os.environ and "AIRFLOW_CONN_WAREHOUSE" in os.environ
    assert not [k for k in env if k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "PG"))]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        wait(lambda: len(subscriber.messages()) >= 20, 30, "readings arrive")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        rt.stop()
    assert proc.returncode == 0, out
    assert edge_password not in out
    assert f"as edge-collector-{INSTANCE.name}" in out
    final = json.loads(out.strip().splitlines()[-1].split("stopped ", 1)[1])
    assert final["published"] == final["acked"] > 0 and final["read_errors"] == 0, out
    msgs = subscriber.settle(0.3)
    assert len({m["message_id"] for m in msgs}) == final["published"]
    assert {m["machine_code"] for m in msgs} == set(MACHINES)


def test_a_plc_away_or_refusing_costs_readings_not_the_collector(
        small_world: Path, broker: Any, subscriber: Subscriber, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The collector starts before the PLCs' server (connection refused: each cycle ends at the
    first failed read, logged once) and keeps polling; once the server answers, every machine
    is read; a configured device the server does not have (an exception response) is counted
    and logged once, the other devices' readings flow."""
    config = gateway_file(tmp_path, broker, 0.05, "edge-test-away")
    config.write_text(config.read_text() + '\n[[devices]]\ndevice_id = 7\nsite = "ERF"\n'
                      'area = "ERF-MACH"\nline = "ERF-L7"\nmachines = ["ERF-L7-M01"]\n')
    running = RunningCollector(config, broker.password)
    c = running.collector
    rt = None
    try:
        with caplog.at_level("INFO", logger="edge_collector"):
            wait(lambda: c.polls >= 10, 10, "polls while the PLCs are away")
            away = c.status()
            assert away["readings"] == 0 and away["read_errors"] == away["polls"]
            start = truth(small_world, "machine_counter_shift")[0]["shift_start_at"]
            rt = plc_runtime(small_world, start, speed=600.0)
            wait(lambda: all(m in c.last_instant for m in MACHINES), 20, "every machine read")
            polls = c.polls
            wait(lambda: c.polls >= polls + 5, 10, "more polls")
    finally:
        running.stop()
        if rt is not None:
            rt.stop()
    status = c.status()
    assert "ERF-L7-M01" not in c.last_instant
    # after the server came up: one error per cycle, the unknown device's
    assert status["read_errors"] - away["read_errors"] >= 5
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("does not answer" in w for w in warnings) == 1, warnings
    assert sum("device 7 block 0" in w for w in warnings) == 1, warnings
    assert any("the PLC server answers again" in r.getMessage() for r in caplog.records)
    msgs = subscriber.settle(0.3)
    assert {m["machine_code"] for m in msgs} == set(MACHINES)
    assert len({m["message_id"] for m in msgs}) == status["published"] == status["acked"]


def _collector_on(plc: FakePlc, broker: Any, tmp_path: Path, client_id: str, password: str,
                  **overrides: Any) -> Any:
    """A collector of the small plant's gateway file on the fake PLC, not yet polling."""
    from edge_collector.collector import Collector
    from edge_collector.config import load_config

    cfg = load_config(gateway_file(tmp_path, broker, 1.0, client_id),
                      {"plc_port": plc.port, **overrides},
                      environ={"EDGE_MQTT_PASSWORD": password})
    return Collector(cfg)


def test_a_plc_answering_garbage_costs_its_blocks_only(
        broker: Any, subscriber: Subscriber, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Of the four machine blocks, one PLC block answers well; the others answer 4 registers
    short, one register long and exception code 4 (server device failure). Over 5 polls: 5
    readings of the good block published, acknowledged and received with the PLC's values,
    3 × 5 read errors, each bad block logged once, the collector still polling."""
    plc = FakePlc({(1, 0): "good", (1, 1): "short", (2, 0): 4, (2, 1): "long"})
    c = _collector_on(plc, broker, tmp_path, "edge-test-garbage", broker.password)
    try:
        c.publisher.start()
        wait(lambda: c.publisher.connects == 1, 10, "connected")
        with caplog.at_level("INFO", logger="edge_collector"):
            sent = [c.poll_once() for _ in range(5)]
        c.publisher.stop(drain_s=10)
    finally:
        c.modbus.close()
        plc.close()
    status = c.status()
    assert sent == [1] * 5
    assert {k: status[k] for k in ("polls", "readings", "read_errors", "published", "acked",
                                   "refused", "repeats", "unchanged")} == {
        "polls": 5, "readings": 5, "read_errors": 15, "published": 5, "acked": 5, "refused": 0,
        "repeats": 0, "unchanged": 0}
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert len(warnings) == 3, warnings
    assert "block 1: 10 registers answered, 14 asked" in warnings[0]
    assert "device 2 block 0" in warnings[1] and "exception_code=4" in warnings[1]
    assert "block 1: 15 registers answered, 14 asked" in warnings[2]
    wait(lambda: len(subscriber.messages()) >= 5, 10, "the 5 readings received")
    msgs = subscriber.settle(0.2)
    assert [(m["machine_code"], int(epoch(m["event_time"])), m["registers"]["good_count"],
             m["registers"]["state_code"]) for m in msgs] == [
        ("ERF-L1-M01", FakePlc.T0 + n, n, 1) for n in range(1, 6)]


def test_a_plc_clock_set_back_is_held_until_it_passes_the_last_instant(
        broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The PLCs' clock goes back 3 s after the third poll: the next two polls read instants
    already passed (held: counted clock_back, one warning per machine), the third the last
    instant again (a repeat), the fourth is published — with the pieces of the whole gap, so
    no piece is counted twice. 7 polls x 4 machines, nothing sent to a broker here."""
    plc = FakePlc(dict.fromkeys(((1, 0), (1, 1), (2, 0), (2, 1)), "good"))
    c = _collector_on(plc, broker, tmp_path, "edge-test-clock", broker.password)
    c.published_ids = []
    try:
        with caplog.at_level("INFO", logger="edge_collector"):
            sent = [c.poll_once() for _ in range(3)]
            plc.clock_offset = -3
            sent += [c.poll_once() for _ in range(4)]
    finally:
        c.modbus.close()
        plc.close()
    status = c.status()
    assert sent == [4, 4, 4, 0, 0, 0, 4]
    assert {k: status[k] for k in ("readings", "published", "clock_back", "repeats",
                                   "read_errors")} == {
        "readings": 28, "published": 16, "clock_back": 8, "repeats": 4, "read_errors": 0}
    t0 = FakePlc.T0
    assert [i for i in c.published_ids if i.startswith("ERF-L1-M01-")] == [
        f"ERF-L1-M01-plc-{t}" for t in (t0 + 1, t0 + 2, t0 + 3, t0 + 4)]
    assert c.last_registers["ERF-L1-M01"]["good_count"] == 7  # the 7th read: 4 pieces on
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 4 and all("clock went back" in w for w in warnings), warnings
    assert sum("clock is past" in r.getMessage() for r in caplog.records) == 4


def test_a_broker_refusing_the_login_and_a_full_queue_are_counted(
        broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password: the broker refuses the login (counted at each of paho's retries,
    logged once, the password in no log line); readings wait in the outbound queue up to
    queue_limit (3) and beyond it are refused and counted: 2 polls × 4 machines = 3 queued +
    5 refused, none acknowledged."""
    wrong = "not-the-" + broker.password
    plc = FakePlc({(1, 0): "good", (1, 1): "good", (2, 0): "good", (2, 1): "good"})
    c = _collector_on(plc, broker, tmp_path, "edge-test-refused", wrong, queue_limit=3)
    try:
        with caplog.at_level("INFO", logger="edge_collector"):
            c.publisher.start()
            wait(lambda: c.publisher.login_refused >= 1, 10, "the login refused")
            sent = [c.poll_once() for _ in range(2)]
            wait(lambda: c.publisher.login_refused >= 2, 10, "paho retries")
        c.publisher.stop(drain_s=0)
    finally:
        c.modbus.close()
        plc.close()
    status = c.status()
    assert sent == [3, 0]
    assert {k: status[k] for k in ("readings", "published", "refused", "acked", "connects",
                                   "disconnects", "read_errors")} == {
        "readings": 8, "published": 3, "refused": 5, "acked": 0, "connects": 0,
        "disconnects": 0, "read_errors": 0}
    assert status["login_refused"] >= 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "refused the connection as plant" in warnings[0], warnings
    assert "Not authorized" in warnings[0], warnings
    assert wrong not in caplog.text and broker.password not in caplog.text
