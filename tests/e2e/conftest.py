"""End-to-end helpers: the real DAGs, run through Airflow against the served test plant
(the `plant` fixture of tests/conftest.py)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest


@pytest.fixture(scope="session")
def dagbag(project_root):
    from airflow.dag_processing.dagbag import DagBag
    from factory_platform.dbt_project import parse_manifest

    parse_manifest(dict(os.environ))
    bag = DagBag(dag_folder=str(project_root / "dags"))
    assert bag.import_errors == {}
    return bag


def run_dag(dagbag, dag_id: str, **kwargs):
    """Run a DAG through Airflow (`dag.test`) and return the finished DagRun."""
    dag = dagbag.get_dag(dag_id)
    for task in dag.tasks:  # fail fast in tests: a retry would only wait out its delay
        task.retries = 0
    return dag.test(**kwargs)


EXTRACTION_DAGS = ("extract_erp", "extract_eam", "extract_plm", "extract_mes", "extract_qms",
                   "extract_wms", "extract_ems", "extract_scada")


def extract_whole_world(dagbag, plant, dag_id: str = "extract_mes"):
    """One manual extraction run whose reload window covers the plant's whole history (from
    30 days before its first shift: ERP orders and master data are older than production)."""
    return run_dag(
        dagbag, dag_id,
        logical_date=plant.end + timedelta(days=1),
        run_conf={"reload_start": (plant.start - timedelta(days=30)).isoformat(),
                  "reload_end": (plant.end + timedelta(days=2)).isoformat()},
    )


def extract_every_system(dagbag, plant) -> list:
    """Every extraction DAG, each in one reload run over the whole plant."""
    return [extract_whole_world(dagbag, plant, dag_id) for dag_id in EXTRACTION_DAGS]


def task_states(dag_run) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance.task_id, TaskInstance.state).filter(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
        ).all()
    return {task_id: str(state) for task_id, state in rows}
