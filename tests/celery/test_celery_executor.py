"""The platform on Airflow's CeleryExecutor, as `make run EXECUTOR=celery` starts it: the private
Redis as broker, two `airflow celery worker` processes (worker1, worker2) with their own Celery
hostnames, the real scheduler, API server and DAG processor, the real DAGs and the served plant.

* one DAG run's tasks execute on both workers (the hostnames recorded on the task instances);
* the plant's pools hold under a backfill: a 7-day backfill of extract_erp (168 runs, 8 active
  at once) never has more sessions open on the ERP database than its pool `plant_erp` allows,
  measured on the plant's side (pg_stat_activity of the ERP database);
* a worker killed (SIGKILL, with its task processes: the machine is gone) in the middle of a
  load task leaves no partial batch, and the task succeeds on its retry on the other worker,
  with raw equal to what the plant emitted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from _dags import pause_all_but, restore_paused
from launcher import processes
from launcher.__main__ import worker_command, worker_environment
from launcher.redisserver import RedisServer
from launcher.settings import (
    Executor,
    executor_environment,
    load_or_create_secrets,
    service_environment,
)
from launcher.settings import test_instance as instance_under_test
from psycopg.conninfo import make_conninfo

pytestmark = pytest.mark.slow
AIRFLOW = str(Path(sys.executable).parent / "airflow")
EXECUTOR = Executor("celery", workers=2, concurrency=2)
DAGS_UNDER_TEST = ("extract_erp", "extract_mes")


@pytest.fixture(scope="module")
def celery_airflow(plant):
    """Redis, api-server, scheduler, dag-processor and two Celery workers of the test instance.
    Only the DAGs under test are unpaused while it runs (the others would schedule their latest
    interval and compete for the workers). A task without a heartbeat for 20 s is failed (and
    retried) by the scheduler and the DAG processor, instead of after 5 minutes."""
    instance = instance_under_test()
    secret = load_or_create_secrets(instance)
    shutil.rmtree(instance.redis_root, ignore_errors=True)  # no message of an earlier session
    redis = RedisServer(instance.redis_root, instance.redis_port, secret["REDIS_PASSWORD"])
    redis.start()
    env = service_environment(instance, {
        **os.environ, **executor_environment(instance, secret, EXECUTOR),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    })
    subprocess.run([AIRFLOW, "dags", "reserialize"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paused_before = pause_all_but(DAGS_UNDER_TEST)
    services = {
        "api-server": [AIRFLOW, "api-server", "--port", str(instance.api_port)],
        "scheduler": [AIRFLOW, "scheduler", "--skip-serve-logs"],
        "dag-processor": [AIRFLOW, "dag-processor"],
    }
    try:
        for name, cmd in services.items():
            processes.start_service(name, cmd, env, instance.pid_dir, instance.log_dir,
                                    instance.var_dir)
        for name in EXECUTOR.worker_names():
            processes.start_service(name, worker_command(name, EXECUTOR),
                                    worker_environment(env, name), instance.pid_dir,
                                    instance.log_dir, instance.var_dir)
        wait_for_api(instance.api_port)
        from launcher.__main__ import wait_workers_ready

        wait_workers_ready(instance, EXECUTOR, env, timeout_s=180)
        yield instance
    finally:
        leftovers = processes.stop_all(str(instance.var_dir), instance.pid_dir, timeout_s=5)
        redis.stop()
        restore_paused(paused_before)
    assert leftovers == []


def wait_for_api(port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health",
                                        timeout=3):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def trigger(dag_id: str, start, end) -> str:
    """A manual run reloading [start, end) (the trigger form's reload params)."""
    import json

    run_id = f"celery_test__{uuid.uuid4().hex[:10]}"
    conf = json.dumps({"reload_start": start.isoformat(), "reload_end": end.isoformat()})
    done = subprocess.run([AIRFLOW, "dags", "trigger", dag_id, "--run-id", run_id, "--conf", conf],
                          env=dict(os.environ), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return run_id


def task_instances(dag_id: str, run_id: str) -> dict[str, tuple[str, str, int]]:
    """task_id → (state, hostname, try_number)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance.task_id, TaskInstance.state, TaskInstance.hostname,
                             TaskInstance.try_number).filter(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id).all()
    return {t: (str(s), h or "", n) for t, s, h, n in rows}


def wait_for_run(dag_id: str, run_id: str, timeout_s: float = 300) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    deadline = time.monotonic() + timeout_s
    while True:
        with create_session() as session:
            state = session.query(DagRun.state).filter(DagRun.dag_id == dag_id,
                                                       DagRun.run_id == run_id).scalar()
        if str(state) in ("success", "failed"):
            return str(state)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} {run_id} still {state}: "
                               f"{task_instances(dag_id, run_id)}")
        time.sleep(2)


def test_one_run_executes_on_both_workers(celery_airflow, plant):
    start = plant.start.replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    fail_unfinished_runs("extract_erp")
    run_id = trigger("extract_erp", start, start + timedelta(hours=6))
    assert wait_for_run("extract_erp", run_id) == "success", task_instances("extract_erp", run_id)
    tis = task_instances("extract_erp", run_id)
    hosts = {host.split("@")[0] for _, host, _ in tis.values()}
    assert len(tis) == 11 and all(state == "success" for state, _, _ in tis.values())
    assert hosts == {"worker1", "worker2"}, tis


class PlantSessions(threading.Thread):
    """Samples, every 20 ms, how many sessions the loader holds on the ERP database (the plant's
    own view: pg_stat_activity), and every 0.5 s how many task instances of the pool run."""

    def __init__(self, erp_dsn: str) -> None:
        super().__init__(daemon=True)
        self.erp_dsn = erp_dsn
        self.stop = threading.Event()
        self.max_sessions = 0
        self.max_running = 0
        self.samples = 0

    def run(self) -> None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        last_ti_check = 0.0
        with psycopg.connect(self.erp_dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                (sessions,) = conn.execute(
                    "select count(*) from pg_stat_activity where datname = 'erp' "
                    "and usename = 'sfdp_loader'").fetchone()
                self.max_sessions = max(self.max_sessions, sessions)
                self.samples += 1
                if time.monotonic() - last_ti_check > 0.5:
                    with create_session() as session:
                        running = session.query(TaskInstance).filter(
                            TaskInstance.pool == "plant_erp",
                            TaskInstance.state == "running").count()
                    self.max_running = max(self.max_running, running)
                    last_ti_check = time.monotonic()
                time.sleep(0.02)


def test_a_7_day_backfill_never_holds_more_erp_sessions_than_its_pool(celery_airflow, plant,
                                                                      warehouse_dsn):
    """The whole 7-day backfill is 1,848 task instances; the test watches the plant side while
    the first 22 of them (2 runs' worth, with 8 runs × 11 tasks ready at once: the pool is
    full from the start) finish, then cancels the backfill: the pressure on the pool is the
    same for the rest of it."""
    from airflow.models.backfill import Backfill
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import timezone
    from airflow.utils.session import create_session
    from factory_platform.sources import get_source

    pool_slots = get_source("erp").pool_slots
    with create_session() as session:  # an interrupted earlier session's backfill would block
        session.query(Backfill).filter(Backfill.dag_id == "extract_erp",
                                       Backfill.completed_at.is_(None)).update(
            {"completed_at": timezone.utcnow()})
        # and an earlier session's backfill runs of these days would be cleared to be run
        # again, which Airflow 3.3.2 cannot do for a run whose queued-at deadline is pending
        # (apache/airflow#70368: TypeError in _recalculate_dagrun_queued_at_deadlines): the
        # test starts from days never run, as on a fresh instance
        session.query(DagRun).filter(DagRun.dag_id == "extract_erp",
                                     DagRun.backfill_id.is_not(None)).delete(
            synchronize_session=False)
    sampler = PlantSessions(make_conninfo(warehouse_dsn, dbname="erp"))
    sampler.start()
    start = plant.start.replace(hour=0, minute=0, second=0, microsecond=0)
    created = subprocess.run(
        [AIRFLOW, "backfill", "create", "--dag-id", "extract_erp", "--from-date",
         start.isoformat(), "--to-date", (start + timedelta(days=7)).isoformat(),
         "--reprocess-behavior", "completed", "--max-active-runs", "8"],
        env=dict(os.environ), capture_output=True, text=True, check=False)
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
    with create_session() as session:
        backfill_id = session.query(Backfill.id).filter(Backfill.dag_id == "extract_erp").order_by(
            Backfill.id.desc()).first()[0]
    deadline = time.monotonic() + 300
    done = 0
    try:
        while done < 22:
            with create_session() as session:
                runs = [r for (r,) in session.query(DagRun.run_id).filter(
                    DagRun.backfill_id == backfill_id)]
                done = session.query(TaskInstance).filter(
                    TaskInstance.dag_id == "extract_erp", TaskInstance.run_id.in_(runs),
                    TaskInstance.state == "success").count()
                failed = session.query(TaskInstance).filter(
                    TaskInstance.dag_id == "extract_erp", TaskInstance.run_id.in_(runs),
                    TaskInstance.state.in_(("failed", "up_for_retry"))).count()
            assert failed == 0
            assert time.monotonic() < deadline, f"only {done} task instances done"
            time.sleep(1)
    finally:
        cancel_backfill(backfill_id)
        quiet = time.monotonic() + 60  # the tasks still running end or are stopped
        while sampler.is_alive() and time.monotonic() < quiet:
            with psycopg.connect(make_conninfo(warehouse_dsn, dbname="erp")) as conn:
                (left,) = conn.execute("select count(*) from pg_stat_activity where "
                                       "datname = 'erp' and usename = 'sfdp_loader'").fetchone()
            if left == 0:
                break
            time.sleep(1)
        sampler.stop.set()
        sampler.join()
    assert sampler.samples > 100
    assert sampler.max_sessions <= pool_slots, (sampler.max_sessions, pool_slots)
    assert sampler.max_running <= pool_slots
    # the pool was the limit, not a lack of work: it was full (4 worker slots, 88 ready
    # tasks); a task holds its ERP session only while it reads, so fewer are seen at once
    assert sampler.max_running == pool_slots and sampler.max_sessions >= 1


def cancel_backfill(backfill_id: int) -> None:
    """What `POST /backfills/{id}/cancel` does, and the unfinished runs' task instances too (a
    later module's scheduler must not go on with them)."""
    from airflow.models.backfill import Backfill
    from airflow.sdk import timezone
    from airflow.utils.session import create_session

    with create_session() as session:
        backfill = session.get(Backfill, backfill_id)
        backfill.is_paused = True
        backfill.completed_at = timezone.utcnow()
    fail_unfinished_runs("extract_erp")


def fail_unfinished_runs(dag_id: str) -> None:
    """End every queued or running run of `dag_id` and its unfinished task instances: the run
    the scheduler creates for the latest interval when it starts (here: days after the test
    plant's world, with catch-up slices since the last load), or one an interrupted earlier
    session left, must not compete with the test's run for the pool."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = [r for (r,) in session.query(DagRun.run_id).filter(
            DagRun.dag_id == dag_id, DagRun.state.in_(("queued", "running")))]
        session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id.in_(runs)).update(
            {"state": "failed"}, synchronize_session=False)
        session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id.in_(runs),
            TaskInstance.state.notin_(("success", "failed", "skipped"))).update(
            {"state": "failed"}, synchronize_session=False)


def retry_without_delay(dag_id: str, run_id: str) -> None:
    """The run's unfinished task instances retry 1 s after they fail instead of the DAG's 30-60 s
    (retry_delay with backoff): the delay is not what the test is about. Airflow's own per-row
    override, as a cluster policy sets it."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
            TaskInstance.state.notin_(("success", "failed", "skipped"))).update(
            {"retry_delay_override": 1}, synchronize_session=False)


def kill_worker(name: str, pid_dir: Path) -> list[int]:
    """SIGKILL a worker and every process it started (its pool processes, task supervisors and
    task processes) at once: the machine is gone, nothing gets to clean up."""
    pid = int((pid_dir / f"{name}.pid").read_text())
    victims = processes.tree(pid)
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return victims


def emitted(plant, system: str, entity: str) -> list[dict]:
    """Every record version the plant's API holds (its change feed), as served."""
    import json
    import sqlite3

    with sqlite3.connect(plant.world / system / f"{system}.sqlite") as db:
        return [json.loads(body) for (body,) in db.execute(f"select body from {entity}")]


def reset(dsn: str, system: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"drop schema if exists raw_{system} cascade")
        conn.execute("delete from ops.quarantine where system = %s", (system,))
        conn.execute("delete from ops.load_audit where system = %s", (system,))


def running_loads(dag_id: str) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id,
                                                  TaskInstance.state == "running").count()


def blocked_audit_inserts(conn) -> int:
    (n,) = conn.execute(
        "select count(*) from pg_stat_activity where datname = 'warehouse' "
        "and usename = 'sfdp_loader' and wait_event_type = 'Lock' "
        "and query ilike '%insert into ops.load_audit%'").fetchone()
    return n


def test_a_worker_killed_mid_load_leaves_no_partial_batch_and_the_retry_succeeds_elsewhere(
        celery_airflow, plant, warehouse_dsn):
    from factory_platform.sources import get_source

    instance = celery_airflow
    # around the end of the morning shift (14:00 local), when confirmations are recorded
    start = plant.start.replace(minute=0, second=0, microsecond=0) + timedelta(days=2, hours=6)
    end = start + timedelta(hours=2)
    window_start = start - get_source("mes").lookback
    reset(warehouse_dsn, "mes")
    fail_unfinished_runs("extract_mes")
    with psycopg.connect(warehouse_dsn, autocommit=True) as watch, \
            psycopg.connect(warehouse_dsn) as lock:
        # Every MES load stops at its last statement — the audit row, after it has replaced
        # the window in raw, quarantined, moved the mark — while the test holds this lock.
        lock.execute("lock table ops.load_audit in share row exclusive mode")
        run_id = trigger("extract_mes", start, end)
        deadline = time.monotonic() + 240
        while True:
            tis = task_instances("extract_mes", run_id)
            running = sorted(t for t, (state, host, _) in tis.items()
                             if state == "running" and host)
            if running and blocked_audit_inserts(watch) == running_loads("extract_mes"):
                break
            assert time.monotonic() < deadline, (tis, blocked_audit_inserts(watch))
            time.sleep(0.5)
        target = running[0]  # every running load is at its last statement: kill this one's worker
        victim = tis[target][1].split("@")[0]
        survivor = ({"worker1", "worker2"} - {victim}).pop()
        assert kill_worker(victim, instance.pid_dir)
        retry_without_delay("extract_mes", run_id)
        time.sleep(1)
        lock.rollback()  # the survivor's loads commit; the victim's sessions lost their client
    time.sleep(3)
    with psycopg.connect(warehouse_dsn) as conn:
        state, _, tries = task_instances("extract_mes", run_id)[target]
        assert state != "success" and tries == 1  # the retry has not run yet
        name = target.removeprefix("load_")
        assert conn.execute("select count(*) from ops.load_audit where system = 'mes' "
                            "and entity = %s", (name,)).fetchone() == (0,)
        assert conn.execute("select count(*) from ops.quarantine where system = 'mes' "
                            "and entity = %s", (name,)).fetchone() == (0,)
        if conn.execute("select to_regclass(%s)", (f"raw_mes.{name}",)).fetchone()[0]:
            assert conn.execute(f"select count(*) from raw_mes.{name}").fetchone() == (0,)

    assert wait_for_run("extract_mes", run_id, timeout_s=300) == "success"
    state, host, tries = task_instances("extract_mes", run_id)[target]
    assert state == "success" and tries >= 2 and host.startswith(f"{survivor}@")
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session

    with create_session() as session:
        first = session.query(TaskInstanceHistory.hostname).filter(
            TaskInstanceHistory.dag_id == "extract_mes", TaskInstanceHistory.run_id == run_id,
            TaskInstanceHistory.task_id == target, TaskInstanceHistory.try_number == 1).scalar()
    assert first.startswith(f"{victim}@")

    # raw holds exactly the record versions the plant emitted in the window (by key and
    # version), but those quarantined with their reason; one batch, loaded once
    iso = "%Y-%m-%dT%H:%M:%SZ"
    entity = get_source("mes").entity(target.removeprefix("load_"))
    (key,) = entity.natural_key
    with psycopg.connect(warehouse_dsn) as conn:
        quarantined = {r for (r,) in conn.execute(
            "select record_ref from ops.quarantine where system = 'mes' and entity = %s",
            (entity.name,))}
        expected = sorted(
            (r[key], r[entity.cursor]) for r in emitted(plant, "mes", entity.name)
            if window_start.strftime(iso) <= r[entity.cursor] < end.strftime(iso)
            and r[key] not in quarantined)
        landed = sorted((k, u.strftime(iso)) for k, u in conn.execute(
            f'select "{key}", "{entity.cursor}" at time zone \'UTC\' '
            f"from raw_mes.{entity.name}"))
        audits = conn.execute("select status from ops.load_audit where system = 'mes' "
                              "and entity = %s and run_id = %s", (entity.name, run_id)).fetchall()
    assert landed == expected and expected
    assert audits == [("loaded",)]
