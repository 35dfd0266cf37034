"""`airflow backfill create` through a real scheduler gives exactly the raw rows the scheduled
runs give: the backfilled intervals' windows hold every record the plant emitted in them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from _dags import pause_all_but, restore_paused
from launcher import processes
from launcher.settings import service_environment
from launcher.settings import test_instance as instance_under_test

from .test_extract_rest import emitted, reset

pytestmark = pytest.mark.slow
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="module")
def airflow_services(plant):
    """api-server (the Task SDK's execution API) and scheduler of the test instance, with
    every DAG but extract_mes paused while they run."""
    instance = instance_under_test()
    env = service_environment(instance, dict(os.environ))
    subprocess.run([AIRFLOW, "dags", "reserialize"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paused_before = pause_all_but(("extract_mes",))
    try:
        for name, args in (("api-server", ["api-server", "--port", str(instance.api_port)]),
                           ("scheduler", ["scheduler"])):
            processes.start_service(name, [AIRFLOW, *args], env, instance.pid_dir,
                                    instance.log_dir, instance.var_dir)
        yield instance
    finally:
        # 5 s, not the 30 s a real stop grants: nothing of the test runs any more
        leftovers = processes.stop_all(str(instance.var_dir), instance.pid_dir, timeout_s=5)
        restore_paused(paused_before)
    assert leftovers == []


def close_earlier_backfills(dag_id: str) -> None:
    """A backfill left open by an interrupted earlier session would block a new one."""
    from airflow.models.backfill import Backfill
    from airflow.sdk import timezone
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Backfill).filter(Backfill.dag_id == dag_id,
                                       Backfill.completed_at.is_(None)).update(
            {"completed_at": timezone.utcnow()})


def latest_backfill_id(dag_id: str) -> int:
    from airflow.models.backfill import Backfill
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(Backfill.id).filter(Backfill.dag_id == dag_id).order_by(
            Backfill.id.desc()).first()[0]


def wait_for_backfill(backfill_id: int, timeout_s: float = 300) -> list[tuple]:
    """(state, data_interval_start, data_interval_end) of the backfill's runs, once all ended."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    deadline = time.monotonic() + timeout_s
    while True:
        with create_session() as session:
            runs = [(str(r.state), r.data_interval_start, r.data_interval_end)
                    for r in session.query(DagRun).filter(DagRun.backfill_id == backfill_id)]
        if runs and all(r[0] in ("success", "failed") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill {backfill_id} still running: {runs}")
        time.sleep(2)


def test_backfill_create_loads_exactly_the_emitted_records(airflow_services, plant,
                                                           warehouse_dsn):
    # around the end of the morning shift (14:00 local), when confirmations are recorded
    start = plant.start.replace(minute=0, second=0, microsecond=0) + timedelta(days=2, hours=7.5)
    end = start + timedelta(minutes=30)  # two 15-minute intervals: one wave of two runs
    reset(warehouse_dsn, "mes")
    close_earlier_backfills("extract_mes")
    created = subprocess.run(
        [AIRFLOW, "backfill", "create", "--dag-id", "extract_mes", "--from-date",
         start.isoformat(), "--to-date", end.isoformat(), "--reprocess-behavior", "completed",
         "--max-active-runs", "2"], env=dict(os.environ), capture_output=True, text=True,
        check=False)
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
    runs = wait_for_backfill(latest_backfill_id("extract_mes"))
    assert len(runs) >= 2 and all(state == "success" for state, _, _ in runs), runs
    assert all(e - s == timedelta(minutes=15) for _, s, e in runs)  # real data intervals
    window_start = min(s for _, s, _ in runs) - timedelta(hours=2)  # the first lookback
    end = max(e for _, _, e in runs)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    with psycopg.connect(warehouse_dsn) as conn:
        for entity in ("confirmations", "machine_states", "work_orders"):
            key = {"confirmations": "confirmation_id", "machine_states": "state_id",
                   "work_orders": "work_order_id"}[entity]
            quarantined = {r for (r,) in conn.execute(
                "select record_ref from ops.quarantine where system = 'mes' and entity = %s",
                (entity,))}
            expected = sorted(
                (r[key], r["updated_at"]) for r in emitted(plant, "mes", entity)
                if window_start.strftime(iso) <= r["updated_at"] < end.strftime(iso)
                and r[key] not in quarantined)
            landed = sorted((k, u.strftime(iso)) for k, u in conn.execute(
                f"select {key}, updated_at at time zone 'UTC' from raw_mes.{entity}"))
            assert landed == expected and expected, entity
