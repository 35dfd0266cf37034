"""Every DAG file imports cleanly and carries what the people watching the UI rely on."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from factory_platform.sources import all_sources

DAG_FILES = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
EXTRACTION_DAGS = {source.dag_id for source in all_sources().values()}  # the source registry's
EXPECTED_DAGS = EXTRACTION_DAGS | {"transform_dbt", "publish_reporting", "publish_erp"}


@pytest.fixture(scope="module")
def dagbag(project_root):
    import os

    from airflow.dag_processing.dagbag import DagBag
    from factory_platform.dbt_project import parse_manifest

    if not (project_root / "dbt_project" / "target" / "manifest.json").exists():
        parse_manifest(dict(os.environ))  # a fresh clone under `make test-fast`
    return DagBag(dag_folder=str(project_root / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_expected_dags_exist(dagbag):
    assert EXPECTED_DAGS <= set(dagbag.dag_ids)


def test_every_dag_is_documented_owned_tagged_retried_time_limited_and_utc(dagbag):
    problems = []
    for dag_id, dag in dagbag.dags.items():
        if not (dag.doc_md or "").strip():
            problems.append(f"{dag_id}: no doc_md")
        if not dag.tags:
            problems.append(f"{dag_id}: no tags")
        if dag.start_date is None or dag.start_date.utcoffset() != timedelta(0):
            problems.append(f"{dag_id}: start_date {dag.start_date} is not UTC")
        for task in dag.tasks:
            if not task.owner or task.owner == "airflow":
                problems.append(f"{dag_id}.{task.task_id}: owner {task.owner!r}")
            # transform_dbt's one `dbt build` per run is not retried: a retry would build the
            # whole selection again (Cosmos' watcher producer skips its retries anyway)
            single_build = (dag_id, task.task_id) == ("transform_dbt", "dbt.dbt_producer_watcher")
            # nor its model tasks: each reports what that build did with its model, which no
            # retry changes (transform_watch.py)
            model_report = type(task).__name__ == "DbtNodeResult"
            if (task.retries or 0) < 1 and not (single_build or model_report):
                problems.append(f"{dag_id}.{task.task_id}: retries {task.retries}")
            timeout = task.execution_timeout
            if timeout is None or not timedelta(0) < timeout <= timedelta(hours=2):
                problems.append(f"{dag_id}.{task.task_id}: execution_timeout {timeout}")
    assert problems == []


def test_every_registry_system_has_its_extract_dag_documented_by_its_module(dagbag):
    """dags/extract_sources.py makes one DAG per registry module, its docstring the DAG's doc."""
    import importlib

    for system, source in all_sources().items():
        dag = dagbag.get_dag(source.dag_id)
        module = importlib.import_module(f"factory_platform.sources.{system}")
        assert dag.doc_md == module.__doc__, system
        assert set(dag.tags) == {"extract", system, "raw"}
        assert {t.task_id for t in dag.tasks} == {f"load_{e.name}" for e in source.entities}
        assert dag.fileloc.endswith("dags/extract_sources.py")


def test_every_extract_dag_alerts_a_run_not_finished_in_time(dagbag):
    """Each extract_<system> carries its DeadlineAlert: queued + the schedule's cadence + 10
    min, the webhook notifier called by the triggerer (source_watch.extraction_deadline)."""
    from airflow.sdk import DeadlineReference
    from factory_platform.source_watch import run_deadline

    for system, source in all_sources().items():
        (alert,) = dagbag.get_dag(source.dag_id).deadline
        assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT, system
        assert alert.interval == run_deadline(source), system
        assert alert.callback.path == "factory_platform.alerts.WebhookNotifier", system


def test_extraction_runs_have_real_data_intervals(dagbag):
    """Airflow 3 gives a plain cron string zero-width data intervals; ours must be 15 minutes."""
    from airflow.timetables.base import DataInterval

    dag = dagbag.get_dag("extract_mes")
    import pendulum

    info = dag.timetable.infer_manual_data_interval(
        run_after=pendulum.datetime(2026, 10, 20, 10, 7, tz="UTC")
    )
    assert isinstance(info, DataInterval)
    assert info.end - info.start == timedelta(minutes=15)


def test_transform_is_scheduled_on_exactly_the_raw_assets_the_extractions_produce(dagbag):
    """transform_dbt refers to assets by URI; each must be an outlet of an extract DAG."""
    produced = {outlet.uri for dag_id in EXTRACTION_DAGS
                for task in dagbag.get_dag(dag_id).tasks for outlet in task.outlets}
    transform = dagbag.get_dag("transform_dbt")
    referenced = {ref.uri for ref in transform.timetable.asset_condition.objects}
    assert len(referenced) >= 30  # every entity of the 8 systems
    assert referenced == produced


def test_the_way_to_the_erp_gets_a_free_slot_first(dagbag):
    """Queued tasks take free executor slots by priority_weight: transform_dbt's interval,
    dbt build and gate and publish_erp's posting (100) before the extractions (10) — absolute
    weights, whatever the DAGs' shapes. The per-model tasks of a transform run take no slot:
    they start in the triggerer."""
    transform = dagbag.dags["transform_dbt"]
    weights = {t.task_id: (t.priority_weight, str(t.weight_rule)) for t in transform.tasks}
    to_erp = ["data_interval", "dbt.dbt_producer_watcher", "dbt_gate_checks", "gx_gate_checks",
              "quality_gate"]
    assert {weights[t] for t in to_erp} == {(100, "absolute")}
    reports = [t for t in transform.tasks if type(t).__name__ == "DbtNodeResult"]
    assert reports and all(t.start_from_trigger for t in reports)
    posting = dagbag.dags["publish_erp"].get_task("post_to_erp")
    assert (posting.priority_weight, str(posting.weight_rule)) == (100, "absolute")
    extraction = {(t.priority_weight, str(t.weight_rule))
                  for dag_id in EXTRACTION_DAGS for t in dagbag.dags[dag_id].tasks}
    assert extraction == {(10, "absolute")}


@pytest.mark.parametrize("dag_file", DAG_FILES)
def test_dag_file_imports_without_heavy_work(project_root, dag_file):
    """A DAG file must not pull pandas or Great Expectations in at parse time."""
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('pandas', 'great_expectations', 'matplotlib') if m in sys.modules]; "
        "print('HEAVY=' + ','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(project_root / "dags" / dag_file)],
                         capture_output=True, text=True, check=True)
    heavy = [line for line in out.stdout.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], out.stdout
