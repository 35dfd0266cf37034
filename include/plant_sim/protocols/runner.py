"""Runs the shop floor's protocols beside the runtime's HTTP servers, on the same clock: OPC UA
and Modbus in one asyncio event loop (its own thread), the MQTT publisher in its own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plant_sim.protocols.store import ShopfloorStore


@dataclass
class MqttTarget:
    """Where the plant publishes: a broker, its login and the publisher's client id."""

    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = "plant-sim"


class Shopfloor:
    """OPC UA (`opcua_port`), Modbus (`modbus_port`), MQTT (`mqtt`): each only when given."""

    def __init__(
        self,
        world: Path,
        clock: Any,
        host: str = "127.0.0.1",
        opcua_port: int | None = None,
        modbus_port: int | None = None,
        mqtt: MqttTarget | None = None,
        broker_restart: Callable[[], None] | None = None,
        opcua_retention_hours: float = 48.0,
    ) -> None:
        self.store = ShopfloorStore(world)
        self.clock = clock
        self.host = host
        self.opcua: Any = None
        self.modbus: Any = None
        self.mqtt: Any = None
        if opcua_port is not None:
            from plant_sim.protocols.opcua import OpcUaServer

            self.opcua = OpcUaServer(
                self.store, clock, host, opcua_port, opcua_retention_hours
            )
        if modbus_port is not None:
            from plant_sim.protocols.modbus import ModbusPlcs

            self.modbus = ModbusPlcs(self.store, clock, host, modbus_port)
        if mqtt is not None:
            from plant_sim.protocols.mqtt import MqttPublisher

            self.mqtt = MqttPublisher(
                self.store,
                clock,
                mqtt.host,
                mqtt.port,
                mqtt.user,
                mqtt.password,
                mqtt.client_id,
                broker_restart,
            )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start the servers (returns once they listen; raises what kept one from starting)."""
        if self.opcua or self.modbus:
            self._thread = threading.Thread(
                target=self._run_loop, name="shopfloor", daemon=True
            )
            self._thread.start()
            self._started.wait(60)
            if self._error is not None:
                raise RuntimeError(
                    f"shop floor servers did not start: {self._error}"
                ) from self._error
        if self.mqtt is not None:
            self.mqtt.start()

    def _run_loop(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._started.set()
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            if self.opcua:
                await self.opcua.start()
            if self.modbus:
                await self.modbus.start()
            self._started.set()
            while not self._stopping.is_set():
                if self.opcua:
                    await self.opcua.tick()
                try:
                    await asyncio.wait_for(self._stopping.wait(), 0.25)
                except TimeoutError:
                    pass
        finally:
            if self.modbus:
                await self.modbus.stop()
            if self.opcua:
                await self.opcua.stop()

    def stop(self) -> None:
        """Stop everything started; idempotent."""
        if self.mqtt is not None:
            self.mqtt.stop()
        if (
            self.loop is not None
            and self._stopping is not None
            and self.loop.is_running()
        ):
            self.loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=20)
            self._thread = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.opcua:
            out["opcua"] = self.opcua.endpoint
        if self.modbus:
            out["modbus"] = f"modbus-tcp://{self.host}:{self.modbus.port}"
        if self.mqtt:
            out["mqtt"] = f"mqtt://{self.mqtt.host}:{self.mqtt.port}"
        return out

    def status(self) -> dict[str, Any]:
        return {"mqtt": self.mqtt.status()} if self.mqtt else {}
