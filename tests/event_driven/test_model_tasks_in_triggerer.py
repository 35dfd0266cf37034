"""The model tasks of a transform_dbt run end in the triggerer, without a worker (#15: a run
that holds its ~100 model tasks on worker slots holds back the next run, one at a time).

The real scheduler, triggerer and API server of the test instance (LocalExecutor, as `make
run` starts them: conftest.airflow_services) and transform_dbt as the DAG processor writes it to the metadata DB. The
test makes a run whose producer, gate and data_interval tasks are done, with the XComs a build
leaves: the producer's report per node (stg_mes__confirmations built, its tests passed;
mart_quality built, one test on it failed; nothing else built) and data_interval's tests per
node. The scheduler then starts every model task in the triggerer (`start_from_trigger`): none
is ever queued to an executor; stg_mes__confirmations ends success, mart_quality failed (its log
names the test and dbt's message), its downstream model tasks upstream_failed, every other one
skipped ("not in this run's selection"), and the run failed.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _dags import pause_all_but
from launcher.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow
DAG_ID = "transform_dbt"
PRODUCER = "dbt.dbt_producer_watcher"
BUILT = "model.factory_platform.stg_mes__confirmations"
FAILED_TEST_ON = "model.factory_platform.mart_quality"
DONE_BEFORE = ("data_interval", PRODUCER, "dbt_gate_checks", "gx_gate_checks", "quality_gate")


def serialize_transform_dag():
    """What the DAG processor does with dags/transform_dbt.py; returns the DAG it parsed."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "transform_dbt.py"))
    assert bag.import_errors == {}
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.dags[DAG_ID]


def end_unfinished() -> None:
    """transform_dbt with nothing pending: no queued asset event (it would start a real build),
    unfinished runs ended failed."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == DAG_ID).delete()
        for run in session.query(DagRun).filter(
                DagRun.dag_id == DAG_ID, DagRun.state.in_([DagRunState.QUEUED,
                                                           DagRunState.RUNNING])):
            run.state = DagRunState.FAILED


def take_failure_callbacks(run_id: str) -> list[str]:
    """The callbacks (the failure alert) the run's failed tasks queued for the DAG processor, as
    JSON text — taken out of the metadata DB: a DAG processor of a later test would otherwise
    run them and send their alerts."""
    from airflow.models.callback import DagProcessorCallback
    from airflow.utils.session import create_session

    with create_session() as session:
        queued = [(c, json.dumps(c.data, default=str))
                  for c in session.query(DagProcessorCallback)]
        mine = [(callback, text) for callback, text in queued if run_id in text]
        for callback, _ in mine:
            session.delete(callback)
    return [text for _, text in mine]


def node_results(tests: dict[str, list[str]]) -> tuple[dict, str]:
    """The producer's node results (Cosmos' keys, as BufferedDbtProducer pushes them), and
    the failing test."""
    from cosmos.operators._watcher.state import (
        get_dbt_event_xcom_key,
        get_status_xcom_key,
    )

    failing = next(t for t in tests[FAILED_TEST_ON] if ".not_null_" in t)
    results = {get_status_xcom_key(BUILT): {"status": "success"},
               get_status_xcom_key(FAILED_TEST_ON): {"status": "success"},
               get_status_xcom_key(failing): {"status": "fail"},
               get_dbt_event_xcom_key(failing): {"msg": "Got 2 results, configured to fail if != 0"}}
    for test in tests[BUILT] + [t for t in tests[FAILED_TEST_ON] if t != failing]:
        results[get_status_xcom_key(test)] = {"status": "pass"}
    return results, failing


def start_run(tests: dict[str, list[str]], results: dict, nodes: list[str]) -> str:
    """A running transform_dbt run whose tasks before the model tasks are done, with their
    XComs: data_interval's tests per node, the producer's report per node it built (as its
    execute pushes them when dbt ends)."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from factory_platform.transform_watch import (
        TESTS_XCOM_KEY,
        node_report_key,
        node_reports,
    )

    run_id = f"manual__triggerer_test_{uuid.uuid4().hex[:8]}"
    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag(DAG_ID, session=session)
        run = dag.create_dagrun(
            run_id=run_id, logical_date=None, data_interval=None, run_after=datetime.now(UTC),
            conf={}, run_type=DagRunType.MANUAL, triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.RUNNING, session=session)
        session.flush()
        for ti in run.get_task_instances(session=session):
            if ti.task_id in DONE_BEFORE:
                ti.state = TaskInstanceState.SUCCESS
                ti.try_number = 1
        session.flush()
        # as the Execution API stores what a task pushes: the JSON value itself
        XComModel.set(TESTS_XCOM_KEY, tests, dag_id=DAG_ID, task_id="data_interval",
                      run_id=run_id, serialize=False, session=session)
        for unique_id, report in node_reports(results, tests, nodes).items():
            XComModel.set(node_report_key(unique_id), report, dag_id=DAG_ID, task_id=PRODUCER,
                          run_id=run_id, serialize=False, session=session)
    return run_id


def run_state(run_id: str) -> tuple[str, dict[str, tuple]]:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == DAG_ID,
                                           DagRun.run_id == run_id).one()
        tis = {ti.task_id: (str(ti.state), ti.queued_dttm, ti.try_number)
               for ti in session.query(TaskInstance).filter(TaskInstance.dag_id == DAG_ID,
                                                            TaskInstance.run_id == run_id)}
        return str(run.state), tis


def task_log(instance, run_id: str, task_id: str) -> str:
    folder = (instance.var_dir / "airflow" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
              / f"task_id={task_id}")
    return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob("*")))


def test_model_tasks_end_in_the_triggerer_without_a_worker(airflow_services):
    from factory_platform.dbt_project import MANIFEST_PATH
    from factory_platform.transform_watch import DbtNodeResult, tests_by_node

    instance = airflow_services
    dag = serialize_transform_dag()
    model_tasks = {t.task_id for t in dag.tasks if isinstance(t, DbtNodeResult)}
    nodes = [t.unique_id for t in dag.tasks if isinstance(t, DbtNodeResult)]
    tests = tests_by_node(json.loads(Path(MANIFEST_PATH).read_text()))
    results, failing = node_results(tests)
    built_task, failed_task = "dbt.stg_mes__confirmations_run", "dbt.mart_quality_run"
    assert {built_task, failed_task} <= set(model_tasks)
    downstream_of_failed = set(dag.get_task(failed_task).get_flat_relative_ids(upstream=False))
    assert downstream_of_failed and downstream_of_failed <= model_tasks  # its reporting view

    end_unfinished()
    pause_all_but((DAG_ID,))
    try:
        run_id = start_run(tests, results, nodes)
        started = time.monotonic()
        deadline = started + 240
        while True:
            state, tis = run_state(run_id)
            if state in ("success", "failed"):
                break
            assert time.monotonic() < deadline, {t: s for t, s in tis.items()
                                                 if s[0] not in ("success", "skipped")}
            time.sleep(1)
        took = time.monotonic() - started
        callbacks = take_failure_callbacks(run_id)
    finally:
        pause_all_but(())  # while the package's services run (conftest.airflow_services)
        end_unfinished()

    states = {task_id: tis[task_id][0] for task_id in model_tasks}
    assert states[built_task] == "success"
    assert states[failed_task] == "failed"
    assert {states[t] for t in downstream_of_failed} == {"upstream_failed"}
    others = set(model_tasks) - {built_task, failed_task} - downstream_of_failed
    assert {states[t] for t in others} == {"skipped"}, {t: states[t] for t in others
                                                       if states[t] != "skipped"}
    assert state == "failed"
    # the failed model task asked for its failure alert (on_failure_callback, run by the DAG
    # processor)
    assert any(failed_task in text and "TaskCallbackRequest" in text for text in callbacks)
    # none went to a worker: the scheduler handed each straight to the triggerer
    ran = [t for t in model_tasks if states[t] != "upstream_failed"]
    assert [t for t in ran if tis[t][1] is not None] == []
    assert [t for t in ran if tis[t][2] != 1] == []  # no retry either
    failed_log = task_log(instance, run_id, failed_task)
    assert f"1 test(s) on {FAILED_TEST_ON} failed: {failing}" in failed_log
    assert "Got 2 results, configured to fail if != 0" in failed_log
    assert f"test {tests[BUILT][0]}: pass" in task_log(instance, run_id, built_task)
    assert "not in this run's selection" in task_log(instance, run_id, "dbt.mart_oee_shift_run")
    print(f"\n{len(ran)} model tasks ended in the triggerer within {took:.0f} s of the run's "
          f"start")
