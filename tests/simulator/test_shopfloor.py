"""The plant's shop-floor protocols (#16) against the truth: OPC UA history, Modbus registers at
a plant instant, MQTT machine events over a window (real servers on localhost, a real mosquitto).

Ports: OPC UA 4841x, Modbus 1503x, MQTT 1884x (offset by SFDP_TEST_PORT_OFFSET if set)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _world import mes_states, truth
from plant_sim.protocols.modbus import BLOCK, REGISTER_MAP
from plant_sim.protocols.opcua import HISTORY_PAGE, NAMESPACE
from plant_sim.runtime import Runtime
from plant_sim.systems.shopfloor import REASON_CODES, ROLLOVER, STATE_CODES
from plant_sim.timeutil import parse_iso_utc

OFFSET = int(os.environ.get("SFDP_TEST_PORT_OFFSET", "0"))
OPCUA_PORT = 48411 + OFFSET
MODBUS_PORT = 15031 + OFFSET
MQTT_PORT = 18841 + OFFSET
UTC = dt.UTC


def _defects(world: Path, kind: str) -> list[dict[str, str]]:
    return [r for r in truth(world, "injected_defects") if r["kind"] == kind]


def _ms(text: str) -> int:
    """`2026-10-24T04:00:48.500Z` or `…Z` → epoch milliseconds."""
    t = dt.datetime.fromisoformat(text)
    return round(t.timestamp() * 1000)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, UTC)


def _damaged_shifts(world: Path) -> set[tuple[str, str, str]]:
    """(machine, production_date, shift) of confirmations the MES quarantines (not in OEE truth)."""
    import sqlite3

    bad = {
        r["record_id"]
        for r in truth(world, "injected_defects")
        if r["entity"] == "confirmations" and r["action"] == "quarantine"
    }
    ops: dict[str, str] = {}
    out = set()
    with sqlite3.connect(world / "mes" / "mes.sqlite") as c:
        for (body,) in c.execute("SELECT body FROM operations"):
            r = json.loads(body)
            ops[r["operation_id"]] = r["machine_code"]
        for (body,) in c.execute("SELECT body FROM confirmations"):
            r = json.loads(body)
            if r["confirmation_id"] in bad:
                out.add((ops[r["operation_id"]], r["production_date"], r["shift_code"]))
    return out


@pytest.fixture(scope="module")
def fixed_plant(small_world: Path) -> Iterator[Runtime]:
    """OPC UA and Modbus of the small world on a stopped live clock at the world's end
    (tests move it: `rt.clock.start`)."""
    end = json.loads((small_world / "world.json").read_text())["last_shift_end"]
    rt = Runtime(
        small_world,
        mes_port=0,
        qms_port=None,
        clock_mode="live",
        speed=0.0,
        start=end,
        opcua_port=OPCUA_PORT,
        modbus_port=MODBUS_PORT,
    )
    rt.start()
    try:
        yield rt
    finally:
        rt.stop()


# ---- OPC UA -------------------------------------------------------------------------------------
async def _history(client: Any, node: str, start_ms: int, end_ms: int) -> list[Any]:
    n = client.get_node(f"ns=2;s={node}")
    return await n.read_raw_history(_utc(start_ms), _utc(end_ms))


def test_opcua_history_equals_truth(fixed_plant: Runtime, small_world: Path) -> None:
    """Per machine and shift inside the retention window: the State history is the MES's
    intervals; counter changes and deltas are the truth's counts (= the OEE truth's where the MES
    quarantined nothing); bad-quality samples are exactly the listed ones."""
    from asyncua import Client, ua

    now = fixed_plant.clock.now_ms()
    shifts = [
        r
        for r in truth(small_world, "machine_counter_shift")
        if _ms(r["shift_start_at"]) >= now - 48 * 3600 * 1000
    ]
    oee = {
        (r["machine_code"], r["production_date"], r["shift_code"]): r
        for r in truth(small_world, "oee_machine_shift")
    }
    damaged = _damaged_shifts(small_world)
    states = mes_states(small_world)
    bad = {r["record_id"] for r in _defects(small_world, "opcua_bad_quality")}

    async def check() -> int:
        async with Client(f"opc.tcp://127.0.0.1:{OPCUA_PORT}/plant") as c:
            assert await c.get_namespace_index(NAMESPACE) == 2
            # ISA-95 browse path: Objects/ENT/ERF/ERF-MACH/ERF-L1/ERF-L1-M01/GoodCount
            node = await c.nodes.objects.get_child(
                [
                    f"2:{p}"
                    for p in (
                        "ENT",
                        "ERF",
                        "ERF-MACH",
                        "ERF-L1",
                        "ERF-L1-M01",
                        "GoodCount",
                    )
                ]
            )
            assert node.nodeid == ua.NodeId("ERF-L1-M01.GoodCount", 2)
            checked = 0
            for s in shifts:
                m, a = s["machine_code"], _ms(s["shift_start_at"])
                b = _ms(s["shift_end_at"])
                hist = await _history(c, f"{m}.State", a, b - 1)
                want = [
                    (_ms(r["start_at"]), r["state"])
                    for r in states[m]
                    if a <= _ms(r["start_at"]) < b
                ]
                got = [
                    (round(d.SourceTimestamp.timestamp() * 1000), d.Value.Value)
                    for d in hist
                ]
                assert got == want, (m, s["shift_start_at"])
                # pieces complete in (start, end]
                counts = {}
                for tag, col in (
                    ("GoodCount", "good_count"),
                    ("ScrapCount", "scrap_count"),
                    ("ReworkCount", "rework_count"),
                ):
                    h = await _history(c, f"{m}.{tag}", a + 1, b)
                    counts[col] = len(h)
                    assert len(h) == int(s[col]), (m, tag, s["shift_start_at"])
                    if h:
                        assert h[-1].Value.Value - h[0].Value.Value + 1 == len(h)
                total = await _history(c, f"{m}.TotalCount", a + 1, b)
                assert len(total) == int(s["total_count_end"]) - int(
                    s["total_count_start"]
                )
                key = (m, s["production_date"], s["shift_code"])
                if key not in damaged:
                    o = oee[key]
                    assert (
                        counts["good_count"],
                        counts["scrap_count"],
                        counts["rework_count"],
                    ) == (int(o["gq"]), int(o["sq"]), int(o["rq"]))
                temps = await _history(c, f"{m}.Temperature", a, b - 1)
                assert len(temps) == (b - a) // 60000
                for d in temps:
                    rid = f"{m}|Temperature|{d.SourceTimestamp.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                    if not d.StatusCode.is_good():
                        assert d.StatusCode.value == ua.StatusCodes.BadSensorFailure
                checked += 1
            # every listed bad-quality run: 5 bad samples from the listed one
            for rid in bad:
                m, _tag, ts = rid.split("|")
                t = _ms(ts)
                if t < now - 48 * 3600 * 1000:
                    continue
                h = await _history(c, f"{m}.Temperature", t - 60000, t + 5 * 60000)
                assert [d.StatusCode.is_good() for d in h] == [True] + [False] * 5 + [
                    True
                ]
            # beyond the retention window: nothing; live value = the last change
            assert (
                await _history(c, "ERF-L1-M01.State", 0, now - 49 * 3600 * 1000) == []
            )
            live = await c.get_node("ns=2;s=ERF-L2-M02.TotalCount").read_data_value()
            last = await _history(
                c, "ERF-L2-M02.TotalCount", now - 24 * 3600 * 1000, now
            )
            assert live.Value.Value == last[-1].Value.Value
            return checked

    assert asyncio.run(check()) >= 4 * 3 * 2 - 2


def test_opcua_history_pages_with_continuation_points(fixed_plant: Runtime) -> None:
    """A read of more values than one answer holds continues where it stopped (no gap, no
    duplicate)."""
    from asyncua import Client

    now = fixed_plant.clock.now_ms()

    async def read() -> tuple[list[Any], list[Any]]:
        async with Client(f"opc.tcp://127.0.0.1:{OPCUA_PORT}/plant") as c:
            temps = await _history(
                c, "ERF-L1-M01.Temperature", now - 47 * 3600 * 1000, now
            )
            store = fixed_plant.shopfloor.store
            rows = store.history(
                "ERF-L1-M01.Temperature", now - 47 * 3600 * 1000, now, 10**6
            )
            return temps, rows

    temps, rows = asyncio.run(read())
    assert len(rows) > 2 * HISTORY_PAGE  # more than two answers
    assert [round(d.SourceTimestamp.timestamp() * 1000) for d in temps] == [
        r[0] for r in rows
    ]


# ---- Modbus -------------------------------------------------------------------------------------
def _registers(device: int, block: int) -> list[int]:
    from pymodbus.client import ModbusTcpClient

    with ModbusTcpClient("127.0.0.1", port=MODBUS_PORT) as mc:
        r = mc.read_input_registers(block * BLOCK, count=14, device_id=device)
        assert not r.isError(), r
        h = mc.read_holding_registers(block * BLOCK, count=14, device_id=device)
        assert h.registers == r.registers
        return r.registers


def _decode(regs: list[int]) -> dict[str, int]:
    out = {}
    for f in REGISTER_MAP:
        o = f["offset"]
        if f["type"] == "uint32":
            out[f["name"]] = (regs[o] << 16) | regs[o + 1]
        elif f["type"] == "int16":
            out[f["name"]] = regs[o] - 0x10000 if regs[o] & 0x8000 else regs[o]
        else:
            out[f["name"]] = regs[o]
    return out


def _machine_addr(rt: Runtime) -> dict[str, tuple[int, int]]:
    return {
        e["machine_code"]: (e["plc_device_id"], e["plc_block"])
        for e in rt.shopfloor.store.equipment
    }


def test_modbus_registers_equal_truth_at_plant_instants(
    fixed_plant: Runtime, small_world: Path
) -> None:
    """At every shift boundary: counters = (preset + the truth's cumulative counts) mod 2^32,
    the state code is the MES interval's; writes are refused."""
    from pymodbus.client import ModbusTcpClient

    presets = {
        (r["machine_code"], r["counter"]): int(r["preset"])
        for r in truth(small_world, "plc_counters")
    }
    states = mes_states(small_world)
    addr = _machine_addr(fixed_plant)
    cum: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    rows = sorted(
        truth(small_world, "machine_counter_shift"), key=lambda r: r["shift_end_at"]
    )
    saved = fixed_plant.clock.start
    try:
        checked = 0
        for r in rows:
            m = r["machine_code"]
            c = cum[m]
            c[0] += int(r["good_count"])
            c[1] += int(r["scrap_count"])
            c[2] += int(r["rework_count"])
            t = parse_iso_utc(r["shift_end_at"])
            fixed_plant.clock.start = t
            got = _decode(_registers(*addr[m]))
            want = {
                "good_count": (presets[(m, "GoodCount")] + c[0]) % ROLLOVER,
                "scrap_count": (presets[(m, "ScrapCount")] + c[1]) % ROLLOVER,
                "rework_count": (presets[(m, "ReworkCount")] + c[2]) % ROLLOVER,
                "total_count": (presets[(m, "TotalCount")] + int(r["total_count_end"]))
                % ROLLOVER,
                "plant_time": t,
            }
            assert {k: got[k] for k in want} == want, (m, r["shift_end_at"])
            if t * 1000 < _ms(states[m][-1]["end_at"]):
                iv = next(
                    s
                    for s in states[m]
                    if _ms(s["start_at"]) <= t * 1000 < _ms(s["end_at"])
                )
                assert got["state_code"] == STATE_CODES[iv["state"]]
                assert got["reason_code"] == REASON_CODES.get(
                    iv["reason_code"] or "", 0
                )
                assert (got["speed"] > 0) == (iv["state"] == "running")
                assert 250 <= got["temperature"] <= 650
            checked += 1
        assert checked == 4 * 3 * 3
        with ModbusTcpClient("127.0.0.1", port=MODBUS_PORT) as mc:
            assert mc.write_register(0, 1, device_id=1).isError()
    finally:
        fixed_plant.clock.start = saved


def test_modbus_counters_roll_over_as_listed(
    fixed_plant: Runtime, small_world: Path
) -> None:
    """Each listed rollover: the counter reads 2^32 - 1 … just before, 0 at the listed instant."""
    addr = _machine_addr(fixed_plant)
    offsets = {f["tag"]: f["offset"] for f in REGISTER_MAP}
    rolls = _defects(small_world, "modbus_counter_rollover")
    assert len(rolls) == 16  # every counter of the 4 machines
    saved = fixed_plant.clock.start
    try:
        for r in rolls:
            m, tag, at = r["record_id"].split("|")
            at_ms = _ms(at)
            o = offsets[tag]
            fixed_plant.clock.start = (at_ms - 1) / 1000
            before = _registers(*addr[m])
            fixed_plant.clock.start = at_ms / 1000
            after = _registers(*addr[m])
            assert (before[o] << 16 | before[o + 1]) == ROLLOVER - 1, r
            assert (after[o] << 16 | after[o + 1]) == 0, r
    finally:
        fixed_plant.clock.start = saved


# ---- MQTT ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    """A private mosquitto started by the launcher's module, in the test instance's folder."""
    from launcher.mosquitto import Mosquitto
    from launcher.settings import test_instance

    root = test_instance().var_dir / "mosquitto"
    Mosquitto(root, MQTT_PORT, "plant", "").stop()
    shutil.rmtree(root, ignore_errors=True)  # no sessions of earlier runs
    b = Mosquitto(
        root,
        MQTT_PORT,
        "plant",
        secrets.token_urlsafe(12),
    )
    b.start()
    try:
        yield b
    finally:
        b.stop()


class _Subscriber:
    """A durable consumer: persistent session (clean session off), QoS 1, every message kept
    in arrival order."""

    def __init__(self, broker: Any, client_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.got: list[dict[str, Any]] = []
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.c.username_pw_set(broker.user, broker.password)
        self.c.on_message = lambda _c, _u, m: self.got.append(
            {"topic": m.topic, **json.loads(m.payload)}
        )
        self.c.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("ENT/#", qos=1)
        self.c.reconnect_delay_set(0.1, 1)
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def close(self, broker: Any) -> None:
        """Stop and end the session on the broker (else it keeps queueing for it)."""
        import paho.mqtt.client as mqtt

        self.stop()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.c._client_id.decode(),
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        c.username_pw_set(broker.user, broker.password)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        _wait(c.is_connected, 10, "session cleared")
        c.disconnect()
        c.loop_stop()


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _play_window(
    world: Path,
    broker: Any,
    start: str,
    end_ms: int,
    speed: float,
    restart_consumer: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Subscribe, play the plant from `start` until the publisher has published 15
    plant-minutes past `end_ms` and everything it published is acknowledged; the consumer goes
    away once meanwhile if asked. Returns the messages received and the publisher's status."""
    from plant_sim.protocols.runner import MqttTarget

    sub_id = f"test-sub-{secrets.token_hex(3)}"
    sub = _Subscriber(broker, sub_id)
    _wait(lambda: sub.c.is_connected(), 10, "subscriber connects")
    time.sleep(0.3)  # the SUBACK
    rt = Runtime(
        world,
        mes_port=0,
        qms_port=None,
        clock_mode="live",
        speed=speed,
        start=start,
        mqtt=MqttTarget(
            "127.0.0.1", broker.port, broker.user, broker.password, f"plant-{sub_id}"
        ),
        broker_restart=broker.restart,
    )
    rt.start()
    got: list[dict[str, Any]] = []
    try:
        if restart_consumer:
            time.sleep(0.4)
            sub.stop()
            got.extend(sub.got)
            time.sleep(0.5)  # messages meanwhile wait in the broker for the session
            sub = _Subscriber(broker, sub_id)
        pub = rt.shopfloor.mqtt

        def done() -> bool:
            """Published up to 15 plant-minutes past the window, all acknowledged."""
            st = pub.status()
            return (
                _ms(st["position"]) > end_ms + 15 * 60000
                and st["acked"] >= st["published"]
            )

        _wait(done, 90, "the publisher reaches the window's end, acknowledged")
        status = pub.status()
    finally:
        rt.stop()
    # everything acknowledged has reached the broker: wait until the deliveries stop
    n = -1
    while n != len(sub.got):
        n = len(sub.got)
        time.sleep(0.4)
    sub.close(broker)
    return got + sub.got, status


def _check_window(
    world: Path, msgs: list[dict[str, Any]], a: int, b: int
) -> dict[str, int]:
    """Counts from the messages with event time in the shift = the truth's; duplicates and
    out-of-order arrivals are the listed ones (a redelivery after a restart may add copies)."""
    shifts = [
        r
        for r in truth(world, "machine_counter_shift")
        if _ms(r["shift_start_at"]) == a
    ]
    states = mes_states(world)
    first: dict[str, dict[str, Any]] = {}
    seen: Counter[str] = Counter()
    latest: dict[str, int] = {}
    late: set[str] = set()
    for m in msgs:
        seen[m["message_id"]] += 1
        if m["message_id"] in first:
            continue
        first[m["message_id"]] = m
        t = _ms(m["event_time"])
        if t < latest.get(m["machine_code"], -1):
            late.add(m["message_id"])
        latest[m["machine_code"]] = max(latest.get(m["machine_code"], -1), t)
        parts = m["topic"].split("/")
        assert (
            parts[0] == "ENT"
            and parts[4] == m["machine_code"]
            and parts[5] == m["kind"]
        )
    counters: Counter[tuple[str, str]] = Counter()
    state_starts: dict[str, list[int]] = defaultdict(list)
    for m in first.values():
        t = _ms(m["event_time"])
        if m["kind"] == "counter" and a < t <= b:
            counters[(m["machine_code"], m["counter"])] += 1
        if m["kind"] == "state" and a <= t < b:
            state_starts[m["machine_code"]].append(t)
    for s in shifts:
        mc = s["machine_code"]
        for kind in ("good", "scrap", "rework"):
            assert counters[(mc, kind)] == int(s[f"{kind}_count"]), (mc, kind)
        want = [_ms(r["start_at"]) for r in states[mc] if a <= _ms(r["start_at"]) < b]
        assert sorted(state_starts[mc]) == want, mc
    in_window = {i for i, m in first.items() if a <= _ms(m["event_time"]) < b}
    dups = {i for i in in_window if seen[i] > 1}
    listed_dups = {
        r["record_id"] for r in _defects(world, "mqtt_duplicate")
    } & in_window
    listed_late = {
        r["record_id"] for r in _defects(world, "mqtt_out_of_order")
    } & in_window
    assert listed_dups <= dups
    assert late & in_window == listed_late
    return {
        "messages": len(msgs),
        "unique": len(first),
        "dups": len(dups),
        "listed_dups": len(listed_dups),
        "late": len(listed_late),
    }


def _shift_of(world: Path, kind: str) -> tuple[int, int]:
    """The first shift containing a listed `kind` instant (`<site>|<ts>`)."""
    at = _ms(_defects(world, kind)[0]["record_id"].split("|")[1])
    cal = truth(world, "shift_calendar")
    s = next(r for r in cal if _ms(r["shift_start_at"]) <= at < _ms(r["shift_end_at"]))
    return _ms(s["shift_start_at"]), _ms(s["shift_end_at"])


def _in(actions: list[dict[str, Any]], a: int, b: int) -> list[dict[str, Any]]:
    """The publisher's actions planned inside `[a, b)` (the clock runs on after the window)."""
    return [x for x in actions if a <= _ms(x["at"]) < b]


def test_mqtt_shift_with_a_reconnect_equals_truth(
    small_world: Path, broker: Any
) -> None:
    """A whole shift of machine events, with a publisher reconnect in it and the consumer
    gone for a while: counts and states equal the truth; duplicates and out-of-order arrivals
    are the listed ones."""
    a, b = _shift_of(small_world, "mqtt_reconnect")
    msgs, status = _play_window(
        small_world, broker, _utc(a).strftime("%Y-%m-%dT%H:%M:%SZ"), b, 20000.0, True
    )
    assert [x["action"] for x in _in(status["actions"], a, b)] == ["reconnect"]
    stats = _check_window(small_world, msgs, a, b)
    assert stats["listed_dups"] >= 1 or stats["late"] >= 1, stats


def test_mqtt_broker_restart_loses_nothing(small_world: Path, broker: Any) -> None:
    """The broker restarts mid-shift (planned in the truth): the persistent session still gets
    every message of the shift, counts equal the truth."""
    a, b = _shift_of(small_world, "mqtt_broker_restart")
    msgs, status = _play_window(
        small_world, broker, _utc(a).strftime("%Y-%m-%dT%H:%M:%SZ"), b, 20000.0, False
    )
    assert [(x["action"], x["done"]) for x in _in(status["actions"], a, b)] == [
        ("broker_restart", True)
    ]
    _check_window(small_world, msgs, a, b)


# ---- one process: `python -m plant_sim up` -------------------------------------------------------
def test_up_serves_every_protocol_from_one_process(tmp_path: Path, broker: Any) -> None:
    """`up` with --opcua-port, --modbus-port and --mqtt-*: the plant answers on all of them (the
    MQTT password from PLANT_MQTT_PASSWORD, never argv), deterministic for the seed, and stops
    cleanly on SIGTERM."""
    import signal
    import subprocess
    import sys

    from _procs import ENV, SMALL
    from asyncua.sync import Client as SyncClient

    sub = _Subscriber(broker, f"test-up-{secrets.token_hex(3)}")
    _wait(lambda: sub.c.is_connected(), 10, "subscriber connects")
    time.sleep(0.3)
    opc, mb = OPCUA_PORT + 5, MODBUS_PORT + 5
    args = [
        sys.executable, "-m", "plant_sim", "up", "--config", str(SMALL), "--seed", "7",
        "--out", str(tmp_path / "w"), "--inbox", str(tmp_path / "inbox"),
        "--mes-port", "0", "--qms-port", "0", "--clock", "live", "--speed", "3600",
        "--opcua-port", str(opc), "--modbus-port", str(mb), "--mqtt-port", str(broker.port),
        "--mqtt-user", broker.user, "--mqtt-client-id", "plant-up-test",
    ]  # fmt: skip
    assert broker.password not in " ".join(args)
    env = dict(ENV, PLANT_MQTT_PASSWORD=broker.password)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    try:
        described: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while "opcua" not in described:
            assert time.monotonic() < deadline and proc.poll() is None
            line = proc.stdout.readline()
            if line.startswith("{"):
                described = json.loads(line)
        assert described["opcua"] == f"opc.tcp://127.0.0.1:{opc}/plant"
        assert described["modbus"] == f"modbus-tcp://127.0.0.1:{mb}"
        assert described["mqtt"] == f"mqtt://127.0.0.1:{broker.port}"
        with SyncClient(described["opcua"]) as c:
            assert c.get_node("ns=2;s=ERF-L1-M01.State").read_value() in STATE_CODES
        from pymodbus.client import ModbusTcpClient

        with ModbusTcpClient("127.0.0.1", port=mb) as mc:
            regs = mc.read_input_registers(0, count=14, device_id=2).registers
            assert regs[8] in STATE_CODES.values()
        _wait(lambda: len(sub.got) >= 20, 30, "machine events arrive")
        first = sub.got[0]
        assert first["machine_code"].startswith("ERF-L") and first["message_id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        sub.close(broker)
