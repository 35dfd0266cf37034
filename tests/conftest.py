"""Test session set-up: a private PostgreSQL cluster on its own port (never `make run`'s),
Airflow's metadata database on it, and the environment every component reads.

The environment is set in `pytest_configure`, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "include"))

from launcher.pgcluster import Cluster  # noqa: E402
from launcher.settings import (  # noqa: E402
    load_or_create_secrets,
    platform_environment,
    test_instance,
)

INSTANCE = test_instance()


def _cluster() -> Cluster:
    secret = load_or_create_secrets(INSTANCE)
    return Cluster(INSTANCE.pg_root, INSTANCE.pg_port, "postgres", secret["PGPASSWORD"])


def pytest_configure(config) -> None:
    secret = load_or_create_secrets(INSTANCE)
    env = platform_environment(INSTANCE, secret)
    os.environ.update(env)
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    cluster = _cluster()
    cluster.ensure_initialised()
    config._sfdp_started_cluster = not cluster.is_running()
    cluster.start()
    cluster.wait_ready()
    for name in ("warehouse", "airflow"):
        cluster.ensure_database(name)
    _migrate_airflow()


def _migrate_airflow() -> None:
    import airflow

    stamp = INSTANCE.airflow_home / f".migrated-{airflow.__version__}"
    if stamp.exists():
        return
    INSTANCE.airflow_home.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                   check=True, stdout=subprocess.DEVNULL, env=dict(os.environ))
    stamp.touch()


@dataclass
class Postgres:
    """The test cluster: a superuser DSN to a scratch database, and more databases on demand."""

    cluster: Cluster
    dsn: str

    def create_database(self, name: str) -> str:
        self.cluster.drop_database(name)
        self.cluster.ensure_database(name)
        return self.cluster.dsn(name)


@pytest.fixture(scope="session")
def pg() -> Postgres:
    cluster = _cluster()
    scratch = f"scratch_{uuid.uuid4().hex[:8]}"
    cluster.ensure_database(scratch)
    yield Postgres(cluster=cluster, dsn=cluster.dsn(scratch))
    cluster.drop_database(scratch)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


def pytest_unconfigure(config) -> None:
    """Leave things as found: stop the test cluster if this session started it (it starts
    again in about a second); a cluster another session started is left to that session."""
    if getattr(config, "_sfdp_started_cluster", False):
        _cluster().stop()
