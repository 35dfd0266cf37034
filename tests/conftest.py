"""Test session set-up: a private PostgreSQL cluster on its own port (never `make run`'s),
Airflow's metadata database on it, and the environment every component reads.

The environment is set in `pytest_configure`, before any test module imports Airflow.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "include"))
sys.path.insert(0, str(PROJECT_ROOT / "tests"))  # shared test helpers: _pipeline, _dags

from launcher.pgcluster import Cluster
from launcher.settings import (
    SUPERUSER_PASSWORD,
    admin_passfile,
    load_or_create_secrets,
    plant_passfile,
    platform_environment,
    role_dsn,
    role_passwords,
    test_instance,
)

INSTANCE = test_instance()
# The acceptance plant: default.toml — 1 site, 3 lines, 12 machines, 14 days across the DST
# change, every defect kind. SFDP_TEST_PLANT=small picks the 3-day world for quick iterations.
PLANT_NAME = os.environ.get("SFDP_TEST_PLANT", "default")
PLANT_SEED = 42
PLANT_CONFIG = PROJECT_ROOT / "include" / "plant_sim" / "configs" / f"{PLANT_NAME}.toml"


def _cluster() -> Cluster:
    secret = load_or_create_secrets(INSTANCE)
    return Cluster(INSTANCE.pg_root, INSTANCE.pg_port, "postgres", secret[SUPERUSER_PASSWORD],
                   passfile=admin_passfile(INSTANCE, secret))


def pytest_configure(config) -> None:
    """The components get make run's environment: each connection with its job's role. The
    test harness itself (PG*: fixtures that reset and inspect the warehouse) is the superuser;
    its DSNs name a password file — no password in any DSN it hands to a command line."""
    secret = load_or_create_secrets(INSTANCE)
    env = platform_environment(INSTANCE, secret)
    os.environ.update(env)
    os.environ["PGUSER"] = "postgres"
    os.environ["PGPASSFILE"] = str(admin_passfile(INSTANCE, secret))
    # set, not left out: dbt (1.12) loads the nearest .env — `make run`'s, with the transformer's
    # PGPASSWORD — into os.environ when it is imported, without overriding what is set
    os.environ["PGPASSWORD"] = secret[SUPERUSER_PASSWORD]
    # an Airflow connection URI of the superuser (no password in it: libpq takes PGPASSWORD),
    # for tests that point a connection at a scratch database they made
    os.environ["SFDP_TEST_ADMIN_URI"] = f"postgres://postgres@127.0.0.1:{INSTANCE.pg_port}"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    cluster = _cluster()
    cluster.ensure_initialised()
    config._sfdp_started_cluster = not cluster.is_running()
    cluster.start()
    cluster.wait_ready()
    _provision(cluster, secret)
    _migrate_airflow()
    _sync_pools()
    _dag_test_without_deadlines()


def _provision(cluster: Cluster, secret: dict[str, str]) -> None:
    """What the superuser does, as `make run` does it: roles, databases, grants, the warehouse
    bootstrapped with the role matrix (factory_platform.provision)."""
    from factory_platform.provision import provision

    provision(cluster.dsn("postgres"), role_passwords(secret), plant=True)


def _migrate_airflow() -> None:
    import airflow

    stamp = INSTANCE.airflow_home / f".migrated-{airflow.__version__}"
    if stamp.exists():
        return
    INSTANCE.airflow_home.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                   check=True, stdout=subprocess.DEVNULL, env=dict(os.environ))
    stamp.touch()


def _dag_test_without_deadlines() -> None:
    """`dag.test()` runs a DAG without its DeadlineAlerts. Airflow 3.3.2's `dag.test()` fails
    at the end of every successful run of a DAG with a deadline — its in-memory serialization
    leaves the alerts as dicts, which `DagRun.update_state` looks up as ids
    (apache/airflow#73428, fix pending in #73430) — and the extraction DAGs have one
    (source_watch.extraction_deadline). The scheduler's path is not affected and is tested with
    the deadline (tests/alerts); no test here measures a deadline through `dag.test()`."""
    from airflow.sdk.definitions.dag import DAG

    if getattr(DAG.test, "_without_deadlines", False):
        return
    original = DAG.test

    def test(self, *args, **kwargs):
        deadline, self.deadline = self.deadline, None
        try:
            return original(self, *args, **kwargs)
        finally:
            self.deadline = deadline

    test._without_deadlines = True
    DAG.test = test


def _sync_pools() -> None:
    """The plant systems' pools, as `make run` and the deployment's init create them: a task
    in a pool that does not exist is never scheduled."""
    from factory_platform.pools import sync

    sync()


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


@pytest.fixture(scope="module", autouse=True)
def _environment_restored():
    """Each test module starts from the session's environment. Cosmos writes a dbt task's env
    into os.environ when it parses OpenLineage artifacts (harmless in Airflow, where each task
    is its own process); in one pytest process it would leak into later modules, e.g.
    DBT_WRITE_JSON=false into a later `dbt parse`."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


def pytest_unconfigure(config) -> None:
    """Leave things as found: stop the test cluster if this session started it (it starts
    again in about a second); a cluster another session started is left to that session."""
    if getattr(config, "_sfdp_started_cluster", False):
        if "airflow.settings" in sys.modules:  # close Airflow's pooled connections first
            sys.modules["airflow.settings"].dispose_orm()
        _cluster().stop()


@dataclass
class Plant:
    """The served test plant (PLANT_CONFIG, PLANT_SEED)."""

    world: Path
    inbox: Path
    start: datetime  # first shift start (UTC)
    end: datetime  # last shift end (UTC)
    mes_url: str
    qms_url: str
    api_key: str = field(repr=False)  # a failing test prints its fixtures: not the key


@pytest.fixture(scope="session")
def warehouse_dsn() -> str:
    """The superuser's DSN with its password file named in it: a Cosmos dbt task writes its own
    environment (the transformer's PGPASSFILE) into os.environ within a test module."""
    from factory_platform.warehouse import env_dsn
    from psycopg.conninfo import make_conninfo

    return make_conninfo(env_dsn(), passfile=os.environ["PGPASSFILE"])


@pytest.fixture(scope="session")
def plant(warehouse_dsn) -> Plant:
    """Generate the test world, load its truth and the ERP/EAM databases, and serve MES, QMS
    and the file drops (batch clock: everything visible, every file dropped at start).
    The platform meets it only over HTTP, SQL and the inbox folders, as a real plant."""
    from factory_platform import roles
    from factory_platform.roles import apply_plant_privileges

    world = INSTANCE.var_dir / "worlds" / f"{PLANT_NAME}-{PLANT_SEED}"
    inbox = INSTANCE.plant_dir / "inbox"  # where the *_drops connections point
    secret = load_or_create_secrets(INSTANCE)
    api_key = secret["MES_API_KEY"]
    # the plant's own roles, their passwords in its own password file; the key by environment
    # (nothing secret on a command line, as `make run` starts it)
    passfile = plant_passfile(INSTANCE, secret)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AIRFLOW_CONN_"))}
    env.update(PYTHONPATH=str(PROJECT_ROOT / "include"), PLANT_API_KEY=api_key)
    python = sys.executable
    cluster = _cluster()
    subprocess.run([python, "-m", "plant_sim", "generate", "--config", str(PLANT_CONFIG),
                    "--seed", str(PLANT_SEED), "--out", str(world)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([python, "-m", "plant_sim", "load", "--world", str(world),
                    "--truth-dsn", role_dsn(INSTANCE, roles.PLANT_TRUTH, "warehouse", passfile),
                    "--erp-dsn", role_dsn(INSTANCE, roles.PLANT_ERP, "erp", passfile),
                    "--eam-dsn", role_dsn(INSTANCE, roles.PLANT_EAM, "eam", passfile)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    for system in ("erp", "eam"):  # the loader reads them, the publisher only posts
        apply_plant_privileges(cluster.dsn(system), system)
    shutil.rmtree(inbox, ignore_errors=True)  # a fresh delivery: every file dropped again
    server = subprocess.Popen(
        [python, "-m", "plant_sim", "serve", "--world", str(world), "--inbox", str(inbox),
         "--mes-port", str(INSTANCE.mes_port), "--qms-port", str(INSTANCE.qms_port),
         "--opcua-port", str(INSTANCE.opcua_port),  # the shop floor's OPC UA server (#16)
         "--clock", "batch"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    mes_url = f"http://127.0.0.1:{INSTANCE.mes_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{mes_url}/api/v1/health", timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulated plant did not start")
            time.sleep(0.3)
    while True:  # the OPC UA server starts after the HTTP APIs
        try:
            socket.create_connection(("127.0.0.1", INSTANCE.opcua_port), timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulated plant's OPC UA server did not start")
            time.sleep(0.3)
    with open(world / "truth" / "shift_calendar.csv", encoding="utf-8") as fh:
        calendar = list(csv.DictReader(fh))
    start = min(datetime.fromisoformat(r["shift_start_at"]) for r in calendar)
    end = max(datetime.fromisoformat(r["shift_end_at"]) for r in calendar)
    yield Plant(world=world, inbox=inbox, start=start.astimezone(UTC),
                end=end.astimezone(UTC), mes_url=mes_url,
                qms_url=f"http://127.0.0.1:{INSTANCE.qms_port}", api_key=api_key)
    server.terminate()
    server.wait(timeout=10)
