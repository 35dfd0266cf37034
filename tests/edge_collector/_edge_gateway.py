"""Helpers of the edge collector's tests: the small plant's gateway configuration, its PLCs on
the test instance's Modbus port, a durable MQTT subscriber, the collector in a thread."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

INCLUDE = Path(__file__).resolve().parents[2] / "include"
if str(INCLUDE) not in sys.path:
    sys.path.insert(0, str(INCLUDE))

from _world import truth
from launcher.settings import test_instance

INSTANCE = test_instance()
SMALL = INCLUDE / "plant_sim" / "configs" / "small.toml"
SEED = 7

# the small plant (2 lines × 2 machines) as its edge gateway is configured
SMALL_GATEWAY = """
[collector]
poll_interval_s = {poll}
enterprise = "ENT"
publish = "change"
heartbeat_s = 60

[plc]
host = "127.0.0.1"
port = {plc_port}
timeout_s = 3.0

[broker]
host = "127.0.0.1"
port = {mqtt_port}
user = "plant"
client_id = "{client_id}"
queue_limit = 50000

[[devices]]
device_id = 1
site = "ERF"
area = "ERF-MACH"
line = "ERF-L1"
machines = ["ERF-L1-M01", "ERF-L1-M02"]

[[devices]]
device_id = 2
site = "ERF"
area = "ERF-MACH"
line = "ERF-L2"
machines = ["ERF-L2-M01", "ERF-L2-M02"]
"""
MACHINES = ("ERF-L1-M01", "ERF-L1-M02", "ERF-L2-M01", "ERF-L2-M02")


def wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.01)


def plc_runtime(world: Path, start: str | float, speed: float) -> Any:
    """The plant's Modbus server alone (MES on a free port: the runtime needs one), live clock."""
    from plant_sim.runtime import Runtime

    rt = Runtime(world, mes_port=0, qms_port=None, clock_mode="live", speed=speed,
                 start=start if isinstance(start, str) else None,
                 modbus_port=INSTANCE.modbus_port)
    rt.start()
    if not isinstance(start, str):
        rt.clock.start = start
    return rt


def gateway_file(tmp: Path, broker: Any, poll: float, client_id: str) -> Path:
    path = tmp / f"{client_id}.toml"
    path.write_text(SMALL_GATEWAY.format(poll=poll, plc_port=INSTANCE.modbus_port,
                                         mqtt_port=broker.port, client_id=client_id))
    shutil.copy(INCLUDE / "edge_collector" / "register_map.toml", tmp / "register_map.toml")
    return path


class Subscriber:
    """A durable consumer of `ENT/+/+/+/+/plc`: persistent session, QoS 1, every delivery kept
    in arrival order (duplicates included)."""

    def __init__(self, broker: Any, client_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.broker = broker
        self.client_id = client_id
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        self.c.username_pw_set(broker.user, broker.password)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("ENT/+/+/+/+/plc", qos=1)
        self.c.on_subscribe = lambda *_: self.subscribed.set()
        self.c.reconnect_delay_set(0.1, 1)
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()
        wait(self.subscribed.is_set, 10, "subscribed")

    def _on_message(self, _c: Any, _u: Any, m: Any) -> None:
        with self.lock:
            self.got.append({"topic": m.topic, **json.loads(m.payload)})

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.got)

    def settle(self, quiet_s: float = 0.5) -> list[dict[str, Any]]:
        """Until no delivery arrives for `quiet_s`."""
        n = -1
        while n != len(self.got):
            n = len(self.got)
            time.sleep(quiet_s)
        return self.messages()

    def close(self) -> None:
        """Disconnect and end the session on the broker (else it keeps queueing for it)."""
        import paho.mqtt.client as mqtt

        self.c.disconnect()
        self.c.loop_stop()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=True, protocol=mqtt.MQTTv311)
        c.username_pw_set(self.broker.user, self.broker.password)
        c.connect("127.0.0.1", self.broker.port)
        c.loop_start()
        wait(c.is_connected, 10, "session cleared")
        c.disconnect()
        c.loop_stop()


class RunningCollector:
    """The collector in a thread of this process (its counters readable), stopped on close."""

    def __init__(self, config_path: Path, password: str,
                 overrides: dict[str, Any] | None = None) -> None:
        from edge_collector.collector import Collector
        from edge_collector.config import load_config

        cfg = load_config(config_path, overrides, environ={"EDGE_MQTT_PASSWORD": password})
        self.collector = Collector(cfg)
        self.collector.published_ids = []
        self.thread = threading.Thread(target=self.collector.run, kwargs={"report_every_s": 3600},
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.collector.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def stepped_instants(world: Path) -> list[int]:
    """Shift boundaries, every hour in between, and around every PLC counter rollover (the
    second before the wrapping piece and the second that contains it)."""
    shifts = truth(world, "machine_counter_shift")
    first = min(int(epoch(r["shift_start_at"])) for r in shifts)
    last = max(int(epoch(r["shift_end_at"])) for r in shifts)
    instants = set(range(first, last + 1, 3600))
    instants |= {int(epoch(r[k])) for r in shifts for k in ("shift_start_at", "shift_end_at")}
    for r in truth(world, "plc_counters"):
        if r["rollover_at"]:
            at = epoch(r["rollover_at"])
            after = int(at) if at == int(at) else int(at) + 1
            instants |= {after - 1, after}
    return sorted(instants)


def by_machine(msgs: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for m in msgs:
        out[m["machine_code"]][int(epoch(m["event_time"]))] = m
    return out


def known_at(at: dict[int, dict[str, Any]], t: int) -> dict[str, Any]:
    """A machine's registers as a consumer of the published readings knows them at PLC instant
    `t`: the last reading published at or before it (an unchanged reading is not published)."""
    return at[max(i for i in at if i <= t)]["registers"]


class FakePlc:
    """A PLC that misbehaves on the wire: a Modbus TCP server (MBAP framing, function codes 3
    and 4) on a free port, each (device id, block) answering as `answers` says:
    "good" — the asked registers, its clock `T0 + n` and good_count = total_count = n at its
    n-th read, state running; "short" — 4 registers fewer than asked; "long" — one more; an int
    — that Modbus exception code."""

    T0 = 1_793_000_000

    def __init__(self, answers: dict[tuple[int, int], str | int]) -> None:
        self.answers = answers
        self.clock_offset = 0  # seconds added to every block's clock (set back: negative)
        self.reads: dict[tuple[int, int], int] = defaultdict(int)
        plc = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while header := self.request.recv(7, socket.MSG_WAITALL):
                    tid, _proto, length, unit = struct.unpack(">HHHB", header)
                    fc, address, count = struct.unpack(
                        ">BHH", self.request.recv(length - 1, socket.MSG_WAITALL))
                    body = plc.answer(unit, fc, address, count)
                    self.request.sendall(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, unit: int, fc: int, address: int, count: int) -> bytes:
        key = (unit, address // 100)
        how = self.answers[key]
        if isinstance(how, int):
            return struct.pack(">BB", fc | 0x80, how)
        self.reads[key] += 1
        n = self.reads[key]
        words = [0] * count
        words[1] = words[7] = n  # good_count, total_count (uint32, low words)
        words[8] = 1  # running
        words[12], words[13] = divmod(self.T0 + n + self.clock_offset, 1 << 16)  # plant_time
        words = {"good": words, "short": words[:-4], "long": [*words, 0]}[how]
        return struct.pack(f">BB{len(words)}H", fc, 2 * len(words), *words)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
