"""End-to-end fixtures: a generated plant served on loopback, and the real DAGs.

The simulator runs as a separate process reached only over HTTP (and its truth loaded into
`truth.*`), exactly as the platform would meet a real plant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from launcher.settings import load_or_create_secrets, test_instance

INSTANCE = test_instance()
SEED = 7


@dataclass
class Plant:
    world: Path
    start: datetime
    end: datetime
    mes_url: str
    api_key: str


def _world_bounds(world: Path) -> tuple[datetime, datetime]:
    import csv

    with open(world / "truth" / "shift_calendar.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    start = min(datetime.fromisoformat(r["shift_start_at"]) for r in rows)
    end = max(datetime.fromisoformat(r["shift_end_at"]) for r in rows)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


@pytest.fixture(scope="session")
def warehouse_dsn() -> str:
    from factory_platform.warehouse import env_dsn

    return env_dsn()


@pytest.fixture(scope="session")
def plant(project_root, warehouse_dsn) -> Plant:
    """The small test world: generated, truth loaded, MES served (batch clock: all visible)."""
    world = INSTANCE.var_dir / "worlds" / f"small-{SEED}"
    python = sys.executable
    env = dict(os.environ, PYTHONPATH=str(project_root / "include"))
    config = project_root / "include" / "plant_sim" / "configs" / "small.toml"
    subprocess.run([python, "-m", "plant_sim", "generate", "--config", str(config),
                    "--seed", str(SEED), "--out", str(world)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([python, "-m", "plant_sim", "load", "--world", str(world),
                    "--truth-dsn", warehouse_dsn], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    api_key = load_or_create_secrets(INSTANCE)["MES_API_KEY"]
    server = subprocess.Popen(
        [python, "-m", "plant_sim", "serve", "--world", str(world), "--mes-port",
         str(INSTANCE.mes_port), "--qms-port", str(INSTANCE.qms_port), "--api-key", api_key,
         "--clock", "batch"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{INSTANCE.mes_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulated MES did not start")
            time.sleep(0.3)
    start, end = _world_bounds(world)
    yield Plant(world=world, start=start, end=end, mes_url=url, api_key=api_key)
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="session")
def dagbag(project_root):
    from airflow.dag_processing.dagbag import DagBag

    from factory_platform.dbt_project import parse_manifest

    parse_manifest(dict(os.environ))
    bag = DagBag(dag_folder=str(project_root / "dags"))
    assert bag.import_errors == {}
    return bag


def reset_platform_schemas(dsn: str) -> None:
    """Drop everything the pipeline builds (not the truth), as on a fresh deployment."""
    from factory_platform.warehouse import SCHEMAS, ensure_warehouse

    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema in SCHEMAS:
            conn.execute(f"drop schema if exists {schema} cascade")
    ensure_warehouse(dsn)


def run_dag(dagbag, dag_id: str, **kwargs):
    """Run a DAG through Airflow (`dag.test`) and return the finished DagRun."""
    dag = dagbag.get_dag(dag_id)
    for task in dag.tasks:  # fail fast in tests: a retry would only wait out its delay
        task.retries = 0
    return dag.test(**kwargs)


def extract_whole_world(dagbag, plant: Plant):
    """One manual extract_mes run whose reload window covers the plant's whole history."""
    return run_dag(
        dagbag, "extract_mes",
        logical_date=plant.end + timedelta(days=1),
        run_conf={"reload_start": plant.start.isoformat(),
                  "reload_end": (plant.end + timedelta(days=1)).isoformat()},
    )


def task_states(dag_run) -> dict[str, str]:
    from airflow.utils.session import create_session
    from airflow.models.taskinstance import TaskInstance

    with create_session() as session:
        rows = session.query(TaskInstance.task_id, TaskInstance.state).filter(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
        ).all()
    return {task_id: str(state) for task_id, state in rows}
