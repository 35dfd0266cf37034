"""One run of each file-drop DAG through Airflow (`dag.test`): the tasks succeed and their
batches are audited for the run's interval."""

from __future__ import annotations

from datetime import timedelta

import pytest

from .conftest import scalar

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("system, offset", [
    ("wms", timedelta(days=1, hours=5)), ("scada", timedelta(days=1, hours=5)),
    ("ems", timedelta(days=1, hours=5)), ("plm", timedelta(days=2)),
])
def test_extract_dag_runs_one_interval(system, offset, project_root, plant, warehouse_dsn):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    dagbag = DagBag(dag_folder=str(project_root / "dags" / "extract_sources.py"))
    dag = dagbag.get_dag(f"extract_{system}")
    assert dag is not None, dagbag.import_errors
    for task in dag.tasks:  # fail fast: a retry would only wait out its delay
        task.retries = 0
    logical_date = plant.start.replace(minute=0) + offset
    run = dag.test(logical_date=logical_date)
    assert run.state == DagRunState.SUCCESS
    for task in dag.tasks:
        entity = task.task_id.removeprefix("load_")
        assert scalar(warehouse_dsn, "select status from ops.load_audit where system = %s "
                      "and entity = %s and run_id = %s", system, entity, run.run_id) == "loaded"
