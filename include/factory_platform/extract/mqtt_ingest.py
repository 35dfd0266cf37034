"""The MQTT durable subscriber: the unified namespace into `raw_mqtt.messages`, exactly once.

    python -m factory_platform.extract.mqtt_ingest    # started with the platform (make run,
                                                      # the compose service `mqtt-ingest`)

It subscribes with a **persistent session** (MQTT 5, clean start off, a session expiry of 14 days
by default; client id per environment, `sfdp-<environment>-ingest`), QoS 1, to the source's
topic filter (`ENT/#`), and acknowledges **manually**: a message's PUBACK is sent only after the
micro-batch holding it committed. It collects messages for at most `--batch-ms` (200 ms) or
`--batch-max` (2,000) messages, writes them in one transaction (extract/mqtt.py: insert on
conflict do nothing, quarantine, audit, heartbeat), commits, then acknowledges them.

* **Consumer crash** (kill -9): messages the broker sent but we did not acknowledge are
  redelivered to the session when we reconnect; those that had committed are duplicates by
  `message_id` (counted, not landed). Nothing the broker accepted is lost.
* **Broker restart**: the broker keeps the session and its queued messages (persistence); we
  reconnect (paho retries every ≤ 2 s) and it redelivers what was unacknowledged.
* **Warehouse down**: the batch rolls back, nothing is acknowledged, the ingest waits and
  retries the same messages; the broker keeps sending up to the receive maximum only.
* **The broker says no** (a refused login, a refused subscription or one granted at QoS 0
  only) or cannot be reached: the ingest retries, logs each new reason once, and its heartbeat
  carries it (`connected` false, `disconnected_since`, `last_error`): extract_mqtt fails on it
  after two minutes with the broker's reason.

The connections are Airflow's (`plant_mqtt`, `warehouse_load`, from `AIRFLOW_CONN_*`): no
password on the command line or in the log. SIGTERM/SIGINT: the current batch commits and is
acknowledged, then the client disconnects (the session stays on the broker).
"""

from __future__ import annotations

import argparse
import logging
import queue
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from factory_platform.extract.mqtt import (
    HEARTBEAT_EVERY,
    BrokerLink,
    BrokerSettings,
    MicroBatchWriter,
    broker_settings,
    ensure_tables,
    parse_message,
)

log = logging.getLogger("factory_platform.mqtt_ingest")

# MQTT 5 "receive maximum" (at most 65,535): how many unacknowledged QoS 1 messages the broker
# may have in flight to us. Our acknowledgements wait for the commit, so this bounds a
# micro-batch from above and must exceed what arrives while one commits (5,000 msg/s × 0.5 s).
RECEIVE_MAXIMUM = 20_000
APPLICATION_NAME = "sfdp-mqtt-ingest"  # its warehouse session, in pg_stat_activity
REPORT_EVERY_S = 60  # a log line: connected?, counts since start, messages waiting


@dataclass
class Incoming:
    mid: int
    topic: str
    payload: bytes


class Ingest:
    """One durable subscriber and its micro-batch loop."""

    def __init__(self, settings: BrokerSettings, dsn: str, batch_ms: int = 200,
                 batch_max: int = 2000) -> None:
        self.settings = settings
        self.dsn = dsn
        self.batch_s = batch_ms / 1000
        self.batch_max = batch_max
        self.inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.client: Any = None
        self.link = BrokerLink()  # written by paho's thread, read by the heartbeat

    # --- the broker side ------------------------------------------------------------------------

    def connect(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        s = self.settings
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id,
                        protocol=mqtt.MQTTv5, manual_ack=True)
        if s.login:
            c.username_pw_set(s.login, s.password)
        if s.tls:
            c.tls_set(ca_certs=s.ca_certs)
        c.reconnect_delay_set(0.2, 2)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client = c
        c.connect_async(s.host, s.port, keepalive=30, clean_start=False, properties=props)
        c.loop_start()

    def _link_down(self, why: str | None) -> None:
        """Not subscribed: the heartbeat says so; a new reason is logged once (paho retries
        every ≤ 2 s, a refused login would fill the log)."""
        if why and why != self.link.last_error:
            log.error("%s; retrying", why)
        self.link.down(why)

    def _on_connect(self, client, _userdata, flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            self._link_down(f"the broker refused the connection: {reason_code}")
            return
        # a resumed session keeps its subscription; subscribing again is harmless (idempotent)
        client.subscribe(self.settings.topic, qos=1)
        log.info("connected to %s (session present: %s)", self.settings.label,
                 flags.session_present)

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _props) -> None:
        granted = reason_codes[0]
        if granted.is_failure or granted.value < 1:  # refused, or QoS 0: no redelivery
            self._link_down(f"the broker answered the subscription to {self.settings.topic} "
                            f"with {granted!s} (QoS 1 needed)")
        else:
            self.link.up()

    def _on_connect_fail(self, _client, _userdata) -> None:
        self._link_down(f"cannot reach the broker at {self.settings.host}:{self.settings.port}")

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        if self.stopping.is_set():
            return
        self.link.down(None)  # keeps a refusal's reason: the disconnect that follows it is noise
        if not self.link.last_error:
            self._link_down(f"disconnected from the broker ({reason_code})")

    def _on_message(self, _client, _userdata, msg) -> None:
        self.inbox.put(Incoming(msg.mid, msg.topic, msg.payload))

    # --- the warehouse side ---------------------------------------------------------------------

    def _collect(self) -> list[Incoming]:
        """The next micro-batch: waits for a first message (up to a heartbeat period), then
        takes what arrives within `batch_s` of it, at most `batch_max`."""
        try:
            first = self.inbox.get(timeout=1.0)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_s
        while len(batch) < self.batch_max:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self.inbox.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def run(self) -> None:
        import psycopg

        self.connect()
        conn = psycopg.connect(self.dsn, application_name=APPLICATION_NAME)
        try:
            ensure_tables(conn)
            conn.commit()
            writer = MicroBatchWriter(conn, self.settings)
            last_beat = last_report = 0.0
            pending: list[Incoming] = []
            while True:
                if not pending:
                    if self.stopping.is_set():
                        break
                    pending = self._collect()
                try:
                    if pending:
                        began = time.monotonic()
                        limit = self.settings.max_payload_bytes
                        counts = writer.write([parse_message(m.topic, m.payload, limit)
                                               for m in pending], self.link)
                        written = time.monotonic()
                        for m in pending:  # committed: now the broker may forget them
                            self.client.ack(m.mid, 1)
                        log.debug("batch of %d: written in %.0f ms, acknowledged in %.0f ms; "
                                  "%d waiting", len(pending), (written - began) * 1000,
                                  (time.monotonic() - written) * 1000, self.inbox.qsize())
                        if counts.quarantined:
                            log.warning("%d message(s) quarantined (ops.quarantine)",
                                        counts.quarantined)
                        pending = []
                        last_beat = time.monotonic()
                    elif time.monotonic() - last_beat >= HEARTBEAT_EVERY.total_seconds():
                        writer.heartbeat(self.link)
                        last_beat = time.monotonic()
                except psycopg.OperationalError as exc:
                    # nothing of the batch is acknowledged: it is written again, whole
                    log.error("warehouse unavailable (%s); retrying on a new connection",
                              type(exc).__name__)
                    time.sleep(1)
                    conn = self._reconnect_db(conn)
                    writer.use_connection(conn)
                    continue
                if time.monotonic() - last_report >= REPORT_EVERY_S:
                    log.info("subscribed %s; since start %s; waiting %d",
                             self.link.subscribed, writer.totals, self.inbox.qsize())
                    last_report = time.monotonic()
            log.info("stopped: %s", writer.totals)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            conn.close()

    def _reconnect_db(self, conn):
        import psycopg

        try:
            conn.close()
        except Exception:  # noqa: BLE001, S110 — it is broken anyway
            pass
        while not self.stopping.is_set():
            try:
                return psycopg.connect(self.dsn, application_name=APPLICATION_NAME)
            except psycopg.OperationalError:
                time.sleep(2)
        return psycopg.connect(self.dsn, application_name=APPLICATION_NAME)

    def stop(self, *_args: Any) -> None:
        self.stopping.set()


def without_credentials(text: str) -> str:
    """`text` with the user info of any URL (`scheme://user:password@`) and any JSON
    `"password": "…"` replaced by ***."""
    text = re.sub(r"(\w[\w+.-]*://)\S*@", r"\1***@", text)
    return re.sub(r'("password"\s*:\s*")(?:[^"\\]|\\.)*"', r'\1***"', text)


def main(argv: list[str] | None = None) -> int:
    from factory_platform.sources import get_source
    from factory_platform.warehouse import warehouse_dsn

    parser = argparse.ArgumentParser(prog="python -m factory_platform.extract.mqtt_ingest",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--system", default="mqtt", help="the registry's MQTT system")
    parser.add_argument("--batch-ms", type=int, default=200)
    parser.add_argument("--batch-max", type=int, default=2000)
    parser.add_argument("--warehouse-conn", default="warehouse_load")
    parser.add_argument("--log-level", default="INFO", help="DEBUG: a line per micro-batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source = get_source(args.system)
    try:
        settings = broker_settings(source.conn_id, source.entities[0].endpoint)
        dsn = warehouse_dsn(args.warehouse_conn)
    except Exception as exc:  # noqa: BLE001 — said once, without what it may quote
        # Airflow quotes a connection it cannot parse whole ("Invalid connection string:
        # mqtt://user:password@…"); this process has no secrets masker on its log
        log.error("cannot read the connections %s and %s: %s", source.conn_id,
                  args.warehouse_conn, without_credentials(f"{type(exc).__name__}: {exc}"))
        return 2
    ingest = Ingest(settings, dsn, args.batch_ms, args.batch_max)
    # Airflow's import (the connections) replaced the root logger's handlers: ours again
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stdout, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, ingest.stop)
    signal.signal(signal.SIGINT, ingest.stop)
    log.info("subscribing to %s (QoS 1, persistent session, acknowledged after commit)",
             settings.label)
    ingest.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
