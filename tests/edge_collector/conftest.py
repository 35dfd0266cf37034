"""Fixtures for the Modbus edge collector's tests: the small plant generated once, a private
mosquitto on the test instance's MQTT port, a durable subscriber (helpers: _edge_gateway.py)."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _edge_gateway import (
    INSTANCE,
    MACHINES,
    SEED,
    SMALL,
    RunningCollector,
    Subscriber,
    gateway_file,
    plc_runtime,
    stepped_instants,
    wait,
)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small plant (seed 7): 3 days, 4 machines, every PLC counter rolls over once."""
    from plant_sim.config import load_config
    from plant_sim.world import generate_world

    out = tmp_path_factory.mktemp("edge_world")
    generate_world(load_config(SMALL), SEED, out)
    return out


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    """A private mosquitto (the launcher's module) on the test instance's MQTT port, per module
    (other modules start their own on that port), with make run's accounts (launcher.broker_for:
    the ingest's of the environment's `plant_mqtt` connection, the edge collector's) but no ACL:
    the tests' gateways publish as the plant's account (test_privilege_faults tests the ACL)."""
    from launcher.__main__ import broker_for
    from launcher.settings import load_or_create_secrets

    root = INSTANCE.var_dir / "mosquitto-edge"
    b = dataclasses.replace(broker_for(INSTANCE, load_or_create_secrets(INSTANCE), root=root),
                            acl=())
    b.stop()
    shutil.rmtree(root, ignore_errors=True)  # no sessions of earlier runs
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


@pytest.fixture(scope="module")
def stepped(small_world: Path, broker: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Any]:
    """Step the plant clock through `stepped_instants`, the collector polling every 20 ms
    (publishing on change, heartbeat 60 PLC seconds); wait at each instant until every
    machine has been read at it."""
    instants = stepped_instants(small_world)
    rt = plc_runtime(small_world, float(instants[0]), speed=0.0)
    sub = Subscriber(broker, "edge-test-stepped")
    config = gateway_file(tmp_path_factory.mktemp("gw"), broker, 0.02, "edge-test-stepped-gw")
    running = RunningCollector(config, broker.password)
    c = running.collector
    started = time.monotonic()
    try:
        for t in instants:
            rt.clock.start = t
            wait(lambda t=t: all(c.last_read.get(m) == t for m in MACHINES), 10,
                 f"a reading of every machine at {t}")
        time.sleep(0.1)  # more polls of the last instant: repeats, not published
    finally:
        running.stop()
        rt.stop()
    elapsed = time.monotonic() - started
    status = c.status()
    wait(lambda: len({m["message_id"] for m in sub.messages()}) >= status["published"], 20,
         "every published reading received")
    msgs = sub.settle(0.3)
    sub.close()
    print(f"\nstepped: {len(instants)} instants, {status} in {elapsed:.1f} s")
    return {"instants": instants, "messages": msgs, "published": list(c.published_ids),
            "status": status}
