"""Fixtures for the simulator tests: a small generated world and its MES served in-process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

INCLUDE = Path(__file__).resolve().parents[2] / "include"
if str(INCLUDE) not in sys.path:
    sys.path.insert(0, str(INCLUDE))

from plant_sim.config import load_config
from plant_sim.world import generate_world

CONFIGS = INCLUDE / "plant_sim" / "configs"
SEED = 7


@pytest.fixture(scope="session")
def small_config_path() -> Path:
    return CONFIGS / "small.toml"


@pytest.fixture(scope="session")
def small_world(
    tmp_path_factory: pytest.TempPathFactory, small_config_path: Path
) -> Path:
    """The small config generated once per session (seed 7)."""
    out = tmp_path_factory.mktemp("world_small")
    generate_world(load_config(small_config_path), SEED, out)
    return out


@pytest.fixture()
def mes_runtime(small_world: Path) -> Iterator[object]:
    """MES of the small world on a free port, batch clock, API key `k3y`."""
    from plant_sim.runtime import Runtime

    rt = Runtime(small_world, mes_port=0, qms_port=0, api_key="k3y")
    rt.start()
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture(scope="session")
def scratch_dbs(pg) -> Iterator[object]:
    """`scratch_dbs(name) -> dsn`: a uniquely named database, dropped at the end of the session
    (other sessions may share the test cluster)."""
    import uuid

    import psycopg

    run = uuid.uuid4().hex[:8]
    made: list[str] = []

    def make(name: str) -> str:
        full = f"{name}_{run}"
        made.append(full)
        return pg.create_database(full)

    yield make
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
