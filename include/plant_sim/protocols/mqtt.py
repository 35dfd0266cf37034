"""The machines' events on MQTT: one publisher (paho-mqtt) plays the world's message plan on
the plant clock into a broker — QoS 1, a persistent session, topics of the unified namespace
`<enterprise>/<site>/<area>/<line>/<machine>/<state|counter|alarm>`, JSON payloads with
`message_id` and `event_time`.

Planned faults (`mqtt_actions`, listed in the truth): `reconnect` drops the connection for the
planned plant seconds (messages due meanwhile wait in the client and follow, QoS 1);
`broker_restart` calls the runtime's `broker_restart` hook (the broker belongs to whoever started
it: the launcher, a test); without a hook it is skipped and said so in the log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from plant_sim.protocols.store import ShopfloorStore
from plant_sim.systems.shopfloor import iso_ms


class MqttPublisher:
    """Publishes the plan rows as the clock passes their `publish_ms`."""

    def __init__(
        self,
        store: ShopfloorStore,
        clock: Any,
        host: str,
        port: int,
        user: str | None,
        password: str | None,
        client_id: str,
        broker_restart: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.host, self.port = host, port
        self.user, self._password = user, password
        self.client_id = client_id
        self.broker_restart = broker_restart
        self.lock = threading.Lock()
        self.published = 0
        self.acked = 0
        self.done_actions: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._held = False
        self._thread: threading.Thread | None = None
        self.client: Any = None
        # live: from the clock's start on (MQTT is not a history); batch: everything
        first = int(clock.start * 1000) if clock.mode == "live" else -(2**62)
        self.cursor = (first - 1, 2**62)
        self.actions = [a for a in store.actions() if a[0] >= first]

    def __repr__(self) -> str:  # the password stays out of reprs and tracebacks
        return f"MqttPublisher({self.host}:{self.port}, client_id={self.client_id!r})"

    def start(self) -> None:
        import paho.mqtt.client as mqtt

        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if self.user:
            c.username_pw_set(self.user, self._password)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.1, 1)
        c.on_publish = self._on_publish
        c.on_disconnect = self._on_disconnect
        self.client = c
        c.connect_async(self.host, self.port, keepalive=30)
        c.loop_start()
        self._thread = threading.Thread(
            target=self._run, name="mqtt-publisher", daemon=True
        )
        self._thread.start()

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        with self.lock:
            self.acked += 1

    def _on_disconnect(self, *_args: Any) -> None:
        self._held = True

    def _may_publish(self) -> bool:
        """Connected, and after a disconnect only once the client's resends are acknowledged:
        new messages never overtake the ones the connection cut off (order as planned)."""
        if not self.client.is_connected():
            self._held = True
            return False
        if self._held:
            with self.lock:
                if self.acked < self.published:
                    return False
            self._held = False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - keep publishing; report and retry
                print(f"plant_sim: MQTT publishing failed: {exc!r}", flush=True)
                self._stop.wait(1.0)
            self._stop.wait(0.05)

    def _step(self) -> None:
        if not self._may_publish():
            return
        now = self.clock.now_ms()
        if self.actions and self.actions[0][0] <= now:
            at, action, seconds = self.actions[0]
            self._publish(self.store.messages_after(self.cursor, at))
            self.actions.pop(0)
            self._held = True  # what follows waits for the connection and its resends
            self._act(at, action, seconds)
            return
        self._publish(self.store.messages_after(self.cursor, now))

    def _publish(self, rows: list[tuple[int, int, str, str, str]]) -> None:
        for seq, publish_ms, _mid, topic, payload in rows:
            self.client.publish(topic, payload, qos=1)
            with self.lock:
                self.published += 1
            self.cursor = (publish_ms, seq)

    def _act(self, at: int, action: str, seconds: int) -> None:
        entry = {"at": iso_ms(at), "action": action, "seconds": seconds, "done": True}
        if action == "reconnect":
            self.client.disconnect()
            self.client.loop_stop()
            speed = self.clock.speed if self.clock.mode == "live" else 0
            offline = seconds / speed if speed else 0.2
            self._stop.wait(min(max(offline, 0.2), 30))
            # messages due meanwhile follow once reconnected (late, in their order)
            self.client.reconnect()
            self.client.loop_start()
        elif self.broker_restart is not None:
            self.broker_restart()
        else:
            entry["done"] = False
            print(
                f"plant_sim: broker restart planned at {iso_ms(at)} skipped: no broker "
                "control",
                flush=True,
            )
        with self.lock:
            self.done_actions.append(entry)

    def status(self) -> dict[str, Any]:
        """Published / acknowledged counts, the plan position and the actions taken."""
        with self.lock:
            return {
                "published": self.published,
                "acked": self.acked,
                "position": iso_ms(max(self.cursor[0], 0)),
                "actions": list(self.done_actions),
            }

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
