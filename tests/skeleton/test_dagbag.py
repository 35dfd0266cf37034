"""Every DAG file imports cleanly and carries what the people watching the UI rely on."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

DAG_FILES = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
EXTRACTION_DAGS = {f"extract_{system}" for system in
                   ("erp", "mes", "wms", "scada", "qms", "plm", "eam", "ems")}
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
            if (task.retries or 0) < 1:
                problems.append(f"{dag_id}.{task.task_id}: retries {task.retries}")
            timeout = task.execution_timeout
            if timeout is None or not timedelta(0) < timeout <= timedelta(hours=2):
                problems.append(f"{dag_id}.{task.task_id}: execution_timeout {timeout}")
    assert problems == []


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
