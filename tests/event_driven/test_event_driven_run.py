"""A new MES record starts `extract_mes` without a schedule tick (#15, acceptance).

The real scheduler, triggerer and API server of the test instance (LocalExecutor, as `make
run` starts them; no DAG processor: the test writes the extraction DAGs to the metadata DB as
it would, which registers the change-feed watcher of the only unpaused one, `extract_mes`),
and a live MES: the small test world served by the simulated plant on a live clock (speed 1,
started now, on the instance's MES port + 3), with two confirmations put into its MES database
before it starts, dated 10 s and 25 s after its start — the plant reveals each at that moment. The world's own records are all older than the MES
high-water marks (set to the test's start), so these two are the only changes.

Each record is signalled once, within `SIGNAL_S` of appearing (an event of the change-feed
asset), and starts one asset-triggered run — the first within `SIGNAL_TO_RUN_S` (the second may
wait for a free run: `max_active_runs` 2, a scheduled run can hold one); the run's
confirmations batch (its window ends at the run's `run_after`) loads it; the second run's
lookback reloads the first record, which stays in `raw_mes.confirmations` once. Exactly two
asset-triggered runs. The MES key is in no service log.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from _dags import pause_all_but
from factory_platform.sources import get_source
from launcher import processes
from launcher.settings import PROJECT_ROOT, load_or_create_secrets, service_environment

from .conftest import LIVE_MES_PORT_OFFSET

pytestmark = pytest.mark.slow
SIGNAL_S = 15  # a record's appearance → the change signal (polls every 5 s, whole seconds)
SIGNAL_TO_RUN_S = 60  # a record's appearance → its asset-triggered run queued
RECORD_DELAYS_S = (10, 25)  # after the live plant's start


def serialize_extract_dags() -> None:
    """What the DAG processor does with dags/extract_sources.py (`airflow dags reserialize`
    parses every DAG file): its DAGs and their change-feed watchers into the metadata DB."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "extract_sources.py"))
    assert bag.import_errors == {}
    sync_bag_to_db(bag, "dags-folder", None)


def extract_mes_runs(since: datetime) -> list[dict]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "extract_mes",
                                            DagRun.run_after >= since).all()
        return [{"run_id": r.run_id, "run_type": str(r.run_type), "state": str(r.state),
                 "run_after": r.run_after, "queued_at": r.queued_at} for r in runs]


def end_unfinished() -> None:
    """extract_mes with nothing pending: unfinished runs (of stopped services) end failed with
    their task instances (a queued one would hold a slot of the pool plant_mes), and no change
    event waits for a run."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    with create_session() as session:
        session.query(AssetDagRunQueue).filter(
            AssetDagRunQueue.target_dag_id == "extract_mes").delete()
        for run in session.query(DagRun).filter(
                DagRun.dag_id == "extract_mes",
                DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING])):
            run.state = DagRunState.FAILED
            for ti in session.query(TaskInstance).filter(
                    TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id,
                    TaskInstance.state.in_([TaskInstanceState.SCHEDULED, TaskInstanceState.QUEUED,
                                            TaskInstanceState.RUNNING])):
                ti.state = TaskInstanceState.FAILED


def wait_for(what: str, check, timeout_s: float, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        time.sleep(every_s)


def change_events(since: datetime) -> list[datetime]:
    """When the MES change feed's asset got an event (the trigger fired), in order."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from factory_platform.change_triggers import change_feed_uri

    with create_session() as session:
        return [e.timestamp for e in session.query(AssetEvent).join(
            AssetModel, AssetModel.id == AssetEvent.asset_id).filter(
            AssetModel.uri == change_feed_uri("mes"), AssetEvent.timestamp >= since).order_by(
            AssetEvent.timestamp)]


def watcher_running() -> bool:
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session

    with create_session() as session:
        return any(t.triggerer_id is not None and t.kwargs.get("system") == "mes"
                   for t in session.query(Trigger).filter(
                       Trigger.classpath == "factory_platform.change_triggers.ApiChangeTrigger"))


def add_confirmations(world: Path, at: list[datetime]) -> list[str]:
    """New confirmations in the MES database of `world` (before it is served), updated at `at`:
    copies of one of the world's, with a new id and valid quantities."""
    db = sqlite3.connect(world / "mes" / "mes.sqlite")
    try:
        (body,) = db.execute("select body from confirmations order by updated_at limit 1").fetchone()
        ids = []
        for when in at:
            record = json.loads(body)
            record.update(confirmation_id=f"CNF-EVT-{uuid.uuid4().hex[:10]}", good_qty=40,
                          scrap_qty=1, rework_qty=0,
                          updated_at=when.isoformat().replace("+00:00", "Z"))
            db.execute("insert into confirmations (updated_at, id, body) values (?, ?, ?)",
                       (int(when.timestamp()), record["confirmation_id"], json.dumps(record)))
            ids.append(record["confirmation_id"])
        db.commit()
    finally:
        db.close()
    return ids


@pytest.fixture()
def mes_marks_at_start(mes_marks, warehouse_dsn):
    """The MES high-water marks at the test's start (so the world's records are all loaded, as
    far as the trigger can tell); afterwards the session's marks (`mes_marks`), and no row of
    this test."""
    started = datetime.now(UTC).replace(microsecond=0)
    entities = [e.name for e in get_source("mes").entities]
    mes_marks(dict.fromkeys(entities, started))
    yield started
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        batches = [b for (b,) in conn.execute(
            "select batch_id from ops.load_audit where system = 'mes' and interval_end > %s",
            (started - timedelta(days=1),))]
        for entity in entities:
            conn.execute(f"delete from raw_mes.{entity} where _batch_id = any(%s)", (batches,))
        for table in ("quarantine", "load_audit", "source_incident"):
            conn.execute(f"delete from ops.{table} where batch_id = any(%s)", (batches,))


def test_a_new_mes_record_starts_extract_mes_without_a_schedule_tick(airflow_services,
                                                                     mes_marks_at_start,
                                                                     warehouse_dsn,
                                                                     monkeypatch):
    started = mes_marks_at_start
    instance = airflow_services
    # the live plant's ports, beside the session plant's (which keeps serving its own world)
    live_mes_port = instance.mes_port + LIVE_MES_PORT_OFFSET
    live_qms_port = live_mes_port + 1
    key = load_or_create_secrets(instance)["MES_API_KEY"]
    world = instance.var_dir / "event_driven" / "world"
    shutil.rmtree(world.parent, ignore_errors=True)
    plant_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AIRFLOW"))}
    plant_env.update(PYTHONPATH=str(PROJECT_ROOT / "include"), PLANT_API_KEY=key)
    subprocess.run([sys.executable, "-m", "plant_sim", "generate", "--config",
                    str(PROJECT_ROOT / "include" / "plant_sim" / "configs" / "small.toml"),
                    "--seed", "15", "--out", str(world)], check=True, env=plant_env,
                   stdout=subprocess.DEVNULL)
    end_unfinished()
    try:
        # the extraction DAGs into the metadata DB, new ones paused, and the change-feed
        # watchers of the unpaused one, extract_mes (again if it was new: its watcher comes
        # with it unpaused)
        monkeypatch.setenv("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True")
        known = pause_all_but(("extract_mes",))
        for _ in range(1 if "extract_mes" in known else 2):
            serialize_extract_dags()
            pause_all_but(("extract_mes",))
        wait_for("the MES watcher in the triggerer", watcher_running, 180, 2)
        wait_for("the watcher's first poll", lambda: "mes change feed: no answer" in (
            instance.log_dir / "triggerer.log").read_text(errors="replace"), 60)

        plant_start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        appear = [plant_start + timedelta(seconds=s) for s in RECORD_DELAYS_S]
        ids = add_confirmations(world, appear)
        processes.start_service("plant", [
            sys.executable, "-m", "plant_sim", "serve", "--world", str(world),
            "--inbox", str(world / "inbox"), "--mes-port", str(live_mes_port),
            "--qms-port", str(live_qms_port), "--clock", "live", "--speed", "1",
            "--start", plant_start.isoformat().replace("+00:00", "Z")],
            service_environment(instance, plant_env), instance.pid_dir, instance.log_dir,
            PROJECT_ROOT)
        wait_for("the live MES", lambda: _serves(f"http://127.0.0.1:{live_mes_port}"), 60)

        lags = []
        for record_id, at in zip(ids, appear, strict=True):
            run = wait_for(f"an asset-triggered run after {record_id}", lambda at=at: next(
                (r for r in extract_mes_runs(started) if r["run_type"] == "asset_triggered"
                 and r["run_after"] >= at), None), (at - datetime.now(UTC)).total_seconds()
                + SIGNAL_TO_RUN_S + 240)
            lags.append((run["queued_at"] - at).total_seconds())
            done = wait_for(f"{run['run_id']} to end", lambda run=run: next(
                (r for r in extract_mes_runs(started) if r["run_id"] == run["run_id"]
                 and r["state"] in ("success", "failed")), None), 300, 2)
            assert done["state"] == "success", done
            with psycopg.connect(warehouse_dsn) as conn:
                batch = conn.execute(
                    "select window_start, interval_start, interval_end, rows_loaded "
                    "from ops.load_audit where system = 'mes' and entity = 'confirmations' "
                    "and run_id = %s", (run["run_id"],)).fetchone()
            window_start, interval_start, interval_end, rows_loaded = batch
            assert interval_end == run["run_after"] and window_start <= at < interval_end
            assert interval_end - interval_start <= timedelta(minutes=15)  # a short window
            assert rows_loaded == len(lags)  # the records so far (lookback: the first again)
        # the first record's run is queued at once; the second's may wait for a free run
        # (max_active_runs 2: a scheduled run may be one of them), its signal may not
        assert lags[0] <= SIGNAL_TO_RUN_S, lags
        signals = change_events(started)
        assert len(signals) == len(appear), signals  # one signal per change
        signal_lags = [(signal - at).total_seconds() for signal, at in zip(signals, appear,
                                                                           strict=True)]
        assert all(0 < lag <= SIGNAL_S for lag in signal_lags), signal_lags

        with psycopg.connect(warehouse_dsn) as conn:
            counts = dict(conn.execute(
                "select confirmation_id, count(*) from raw_mes.confirmations "
                "where confirmation_id = any(%s) group by 1", (ids,)).fetchall())
        assert counts == dict.fromkeys(ids, 1)  # each once, the first after two loads
        runs = extract_mes_runs(started)
        assert sorted(r["run_type"] for r in runs if r["run_type"] != "scheduled") == [
            "asset_triggered", "asset_triggered"], runs
        print(f"\nrecord → change signal: {signal_lags} s; → asset-triggered run queued: "
              f"{lags} s")
        for name in ("triggerer", "scheduler", "api-server", "plant"):
            assert key not in (instance.log_dir / f"{name}.log").read_text(errors="replace")
    finally:
        leftovers = processes.stop_service("plant", instance.pid_dir)
        pause_all_but(())  # while the package's services run (conftest.airflow_services)
        end_unfinished()
    assert leftovers == []


def _serves(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/api/v1/health", timeout=2) as response:
            return json.load(response).get("status") == "ok"
    except OSError:
        return False
