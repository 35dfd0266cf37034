"""Poll the PLCs' registers, publish each machine's reading to the unified namespace.

Every `poll_interval_s` (on a fixed schedule: a late cycle skips ticks, it never bunches up) the
collector reads each configured machine's block (one Modbus read per machine: its registers
and the PLC's clock `plant_time` are one consistent snapshot), decodes it with the register map
and publishes one message, QoS 1, to `<enterprise>/<site>/<area>/<line>/<machine>/plc`:

    {"message_id": "<machine>-plc-<plant_time>", "event_time": "<plant_time, UTC, ms, Z>",
     "machine_code": …, "kind": "plc", "device_id": …,
     "registers": {"good_count": …, …, "speed_pph": …}, "poll_time": "<wall clock, UTC>"}

The message id is a function of (machine, PLC instant): a reading of an instant already
published (the PLC's clock has not moved since the last poll) is not published again, and if
it were, the subscriber's message-id dedupe would drop it. With `publish = "change"` (the
default) a reading whose registers equal the machine's last published ones is not published
either, unless `heartbeat_s` PLC seconds have passed since that one (report by exception, as
field gateways do): a change is still published at the first poll that sees it, so counts and
state changes are the same as with `every_poll`, at a fraction of the messages (a machine's
registers change with its pieces, states and temperature samples, not every second).

Nothing the broker has not acknowledged is lost while the collector runs: the MQTT client has a
persistent session (clean session off, a fixed client id) and keeps every unacknowledged QoS 1
message in its outbound queue, resending it after a reconnect (a broker restart, a network
cut). Up to `queue_limit` readings wait while the broker is away; beyond that a reading is
refused and counted (`refused`). Readings are cumulative counters, so a missing reading loses
time resolution, never pieces: the next reading's difference covers the gap.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from edge_collector.config import Device, GatewayConfig

log = logging.getLogger("edge_collector")


def iso_ms(epoch_s: float) -> str:
    """UTC ISO 8601 with milliseconds and `Z`."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def message_id(machine: str, plant_time: int) -> str:
    return f"{machine}-plc-{plant_time}"


class PlcAway(Exception):
    """The Modbus server did not answer (connection refused, timeout): the rest of the cycle's
    reads would wait for the same timeout, so the cycle ends."""


class Publisher:
    """A paho MQTT client with a persistent session; counts what it published and what the
    broker acknowledged (PUBACK)."""

    def __init__(self, cfg: GatewayConfig) -> None:
        import paho.mqtt.client as mqtt

        self.cfg = cfg
        self.lock = threading.Lock()
        self.published = 0  # accepted into the client's outbound queue
        self.acked = 0  # PUBACKs from the broker
        self.refused = 0  # outbound queue full (the broker away too long)
        self.connects = 0
        self.login_refused = 0  # CONNACKs refusing us (bad credentials, not authorised)
        self._refusal: str | None = None  # the last refusal's reason, logged once
        self.disconnects = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                                  clean_session=False, protocol=mqtt.MQTTv311)
        if cfg.mqtt_user:
            self.client.username_pw_set(cfg.mqtt_user, cfg.mqtt_password)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(cfg.queue_limit)
        self.client.reconnect_delay_set(0.2, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            # paho retries every few seconds: counted each time, logged when the reason is new;
            # readings wait in the outbound queue meanwhile (up to queue_limit)
            with self.lock:
                self.login_refused += 1
            if str(reason) != self._refusal:
                self._refusal = str(reason)
                log.warning("broker %s:%s refused the connection as %s: %s; readings wait in "
                            "the queue", self.cfg.mqtt_host, self.cfg.mqtt_port,
                            self.cfg.mqtt_user, reason)
            return
        self._refusal = None
        with self.lock:
            self.connects += 1
        log.info("connected to the broker %s:%s as %s", self.cfg.mqtt_host, self.cfg.mqtt_port,
                 self.cfg.client_id)

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if self._refusal is not None:  # the end of a refused login (counted, logged above)
            return
        with self.lock:
            self.disconnects += 1
        if not reason.is_failure:  # our own disconnect at stop
            return
        log.warning("broker connection lost (%s); unacknowledged readings wait in the queue",
                    reason)

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _reason: Any, _p: Any) -> None:
        with self.lock:
            self.acked += 1

    def start(self) -> None:
        self.client.connect_async(self.cfg.mqtt_host, self.cfg.mqtt_port, keepalive=30)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> bool:
        from paho.mqtt.client import MQTT_ERR_NO_CONN, MQTT_ERR_SUCCESS

        info = self.client.publish(topic, payload, qos=1)
        # NO_CONN: queued by the client, sent once it is connected again
        if info.rc in (MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN):
            with self.lock:
                self.published += 1
            return True
        with self.lock:
            self.refused += 1
        return False

    def pending(self) -> int:
        with self.lock:
            return self.published - self.acked

    def connected(self) -> bool:
        return self.client.is_connected()

    def stop(self, drain_s: float) -> None:
        """Wait up to `drain_s` for the broker to acknowledge what is queued, then disconnect
        (the session stays on the broker)."""
        deadline = time.monotonic() + drain_s
        while self.pending() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()


class Collector:
    """Polls every configured machine, publishes what changed instant."""

    def __init__(self, cfg: GatewayConfig) -> None:
        from pymodbus.client import ModbusTcpClient

        self.cfg = cfg
        self.publisher = Publisher(cfg)
        self.modbus = ModbusTcpClient(cfg.plc_host, port=cfg.plc_port, timeout=cfg.plc_timeout_s,
                                      retries=1)
        self.blocks = [(device, block, machine) for device in cfg.devices
                       for block, machine in enumerate(device.machines)]
        self.stopping = threading.Event()
        self.last_instant: dict[str, int] = {}  # machine → plant_time last published
        self.last_registers: dict[str, dict[str, int | float]] = {}  # … and its registers
        self.last_read: dict[str, int] = {}  # machine → plant_time last read
        self.published_ids: list[str] | None = None  # kept when asked (tests)
        self.polls = 0  # cycles
        self.readings = 0  # machine blocks read
        self.repeats = 0  # readings of an instant already read
        self.unchanged = 0  # readings equal to the last published (publish = change)
        self.clock_back = 0  # readings of an instant before the machine's last one read
        self.read_errors = 0
        self._errors: dict[str, str] = {}  # what failed, by server / device block: its last error

    # -- one cycle --------------------------------------------------------------------------
    def read(self, device: Device, block: int) -> list[int] | None:
        from pymodbus.exceptions import ModbusException

        regmap = self.cfg.register_map
        block_key = f"device {device.device_id} block {block}"
        read = (self.modbus.read_input_registers if regmap.function == "input"
                else self.modbus.read_holding_registers)
        try:
            if not self.modbus.connected:
                self.modbus.connect()
            answer = read(block * regmap.block_size, count=regmap.span,
                          device_id=device.device_id)
        except (ModbusException, OSError) as exc:  # PLC away, timeout, connection reset
            self._error("server", f"PLC {self.cfg.plc_host}:{self.cfg.plc_port} does not "
                        f"answer: {type(exc).__name__}: {exc}")
            self.modbus.close()
            raise PlcAway from exc
        if answer.isError():
            self._error(block_key, f"PLC device {device.device_id} block {block}: {answer}")
            return None
        if len(answer.registers) != regmap.span:  # pymodbus takes what the PLC sent
            self._error(block_key, f"PLC device {device.device_id} block {block}: "
                        f"{len(answer.registers)} registers answered, {regmap.span} asked")
            return None
        self._answered("server")
        self._answered(block_key)
        return list(answer.registers)

    def _error(self, key: str, text: str) -> None:
        """Count a failed read; log it when it is new for `key` (a PLC that stays away is
        logged once, not every poll)."""
        self.read_errors += 1
        if self._errors.get(key) != text:
            log.warning("%s", text)
            self._errors[key] = text

    def _clock_went_back(self, machine: str, instant: int, seen: int) -> None:
        """A reading older than one already read (the PLC's clock set back, a PLC restart): not
        published until the clock passes the last instant read, counted, logged once. Published,
        it would sit between earlier readings by its event time (a fall, then a rise, of its
        counters: pieces counted twice) or reuse an instant's message id with other registers.
        Counters are cumulative: the first reading past it carries the pieces."""
        self.clock_back += 1
        if f"clock {machine}" not in self._errors:
            log.warning("%s: the PLC's clock went back to %s, before %s already read; its "
                        "readings wait until it passes that", machine, iso_ms(instant),
                        iso_ms(seen))
            self._errors[f"clock {machine}"] = "back"

    def _answered(self, key: str) -> None:
        if self._errors.pop(key, None) is not None:
            log.info("%s answers again", "the PLC server" if key == "server" else key)

    def poll_once(self) -> int:
        """Read every machine once; publish each new instant. Returns the messages published."""
        regmap = self.cfg.register_map
        sent = 0
        poll_time = iso_ms(time.time())
        for device, block, machine in self.blocks:
            try:
                words = self.read(device, block)
            except PlcAway:  # the server is away: the next cycle tries again
                break
            if words is None:  # an exception response or garbage: this block only
                continue
            self.readings += 1
            registers = regmap.decode(words)
            instant = int(registers.pop(regmap.time_register))
            seen = self.last_read.get(machine)
            if seen == instant:  # the PLC's clock has not moved
                self.repeats += 1
                continue
            if seen is not None and instant < seen:
                self._clock_went_back(machine, instant, seen)
                continue
            if self._errors.pop(f"clock {machine}", None) is not None:
                log.info("%s: the PLC's clock is past %s again", machine, iso_ms(seen))
            self.last_read[machine] = instant
            last = self.last_instant.get(machine)
            if (self.cfg.publish == "change" and last is not None
                    and registers == self.last_registers[machine]
                    and instant - last < self.cfg.heartbeat_s):
                self.unchanged += 1
                continue
            mid = message_id(machine, instant)
            payload = {
                "message_id": mid,
                "event_time": iso_ms(instant),
                "machine_code": machine,
                "kind": "plc",
                "device_id": device.device_id,
                "registers": registers,
                "poll_time": poll_time,
            }
            body = json.dumps(payload, separators=(",", ":")).encode()
            if self.publisher.publish(self.cfg.topic(device, machine), body):
                self.last_instant[machine] = instant
                self.last_registers[machine] = registers
                sent += 1
                if self.published_ids is not None:
                    self.published_ids.append(mid)
        self.polls += 1
        return sent

    # -- the loop ---------------------------------------------------------------------------
    def run(self, report_every_s: float = 60.0) -> None:
        """Poll on a fixed schedule until `stop()`; then drain the queue and disconnect."""
        self.publisher.start()
        interval = self.cfg.poll_interval_s
        started = next_report = time.monotonic()
        tick = 0
        log.info("polling %d machines on %s:%s every %.3g s", sum(len(d.machines) for d in
                 self.cfg.devices), self.cfg.plc_host, self.cfg.plc_port, interval)
        try:
            while not self.stopping.is_set():
                self.poll_once()
                now = time.monotonic()
                if now >= next_report:
                    log.info("status %s", json.dumps(self.status()))
                    next_report = now + report_every_s
                tick = max(tick + 1, int((now - started) / interval) + 1)
                self.stopping.wait(max(0.0, started + tick * interval - time.monotonic()))
        finally:
            self.modbus.close()
            self.publisher.stop(drain_s=10.0)
            log.info("stopped %s", json.dumps(self.status()))

    def stop(self) -> None:
        self.stopping.set()

    def status(self) -> dict[str, int]:
        p = self.publisher
        with p.lock:
            return {"polls": self.polls, "readings": self.readings, "repeats": self.repeats,
                    "unchanged": self.unchanged, "clock_back": self.clock_back,
                    "read_errors": self.read_errors, "published": p.published,
                    "acked": p.acked, "refused": p.refused, "connects": p.connects,
                    "login_refused": p.login_refused, "disconnects": p.disconnects}
