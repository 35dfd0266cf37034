"""Fixtures for the Modbus edge collector's tests: the small plant generated once, a private
mosquitto on the test instance's MQTT port, a durable subscriber (helpers: _edge_gateway.py)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _edge_gateway import INSTANCE, SEED, SMALL, Subscriber


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small plant (seed 7): 3 days, 4 machines, every PLC counter rolls over once."""
    from plant_sim.config import load_config
    from plant_sim.world import generate_world

    out = tmp_path_factory.mktemp("edge_world")
    generate_world(load_config(SMALL), SEED, out)
    return out


@pytest.fixture(scope="session")
def broker() -> Iterator[Any]:
    """A private mosquitto (the launcher's module) on the test instance's MQTT port."""
    from launcher.mosquitto import Mosquitto

    root = INSTANCE.var_dir / "mosquitto-edge"
    Mosquitto(root, INSTANCE.mqtt_port, "plant", "").stop()
    shutil.rmtree(root, ignore_errors=True)  # no sessions of earlier runs
    b = Mosquitto(root, INSTANCE.mqtt_port, "plant", secrets.token_urlsafe(12))
    b.start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def subscriber(broker: Any) -> Iterator[Subscriber]:
    sub = Subscriber(broker, f"edge-test-sub-{secrets.token_hex(3)}")
    try:
        yield sub
    finally:
        sub.close()
