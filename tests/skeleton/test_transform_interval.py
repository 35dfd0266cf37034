"""What an asset-triggered transform_dbt run processes: the union of the windows its triggering
extraction runs read, handed to every dbt task as the incremental models' interval vars."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from factory_platform.transform import INTERVAL_VARS, dbt_interval_vars


def event(interval_start: str, interval_end: str, window_start: str | None = None):
    extra = {"interval_start": interval_start, "interval_end": interval_end, "rows_loaded": 1}
    if window_start:
        extra["window_start"] = window_start
    return SimpleNamespace(extra=extra)


def test_the_interval_is_the_union_of_the_windows_the_extractions_read():
    context = {"triggering_asset_events": {
        "warehouse://raw_mes/confirmations": [
            event("2026-10-20T10:00:00+00:00", "2026-10-20T10:15:00+00:00",
                  "2026-10-20T08:00:00+00:00"),  # MES: 2 h lookback
            event("2026-10-20T10:15:00+00:00", "2026-10-20T10:30:00+00:00",
                  "2026-10-20T08:15:00+00:00"),
        ],
        "warehouse://raw_scada/tag_values": [
            event("2026-10-20T09:00:00+00:00", "2026-10-20T10:00:00+00:00",
                  "2026-10-20T06:00:00+00:00"),  # SCADA: 3 h lookback
        ],
    }}
    assert dbt_interval_vars(context) == {"interval_start": "2026-10-20T06:00:00+00:00",
                                          "interval_end": "2026-10-20T10:30:00+00:00"}


def test_an_event_without_its_window_counts_from_its_interval_start():
    context = {"triggering_asset_events": {"warehouse://raw_erp/materials": [
        event("2026-10-20T09:00:00+00:00", "2026-10-20T10:00:00+00:00")]}}
    assert dbt_interval_vars(context)["interval_start"] == "2026-10-20T09:00:00+00:00"


@pytest.mark.parametrize("events", [None, {}])
def test_a_manual_run_processes_everything(events):
    """Empty vars: the dbt macros then put no bound on the incremental models."""
    assert dbt_interval_vars({"triggering_asset_events": events}) == {
        "interval_start": "", "interval_end": ""}


@pytest.fixture(scope="module")
def transform(project_root):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(project_root / "dags" / "transform_dbt.py")).get_dag(
        "transform_dbt")


def test_every_dbt_task_runs_after_data_interval_with_its_result_as_vars(transform):
    import jinja2

    dbt_tasks = [t for t in transform.tasks if t.task_id.startswith("dbt.")]
    assert len(dbt_tasks) > 50
    interval = {"interval_start": "2026-10-20T06:00:00+00:00",
                "interval_end": "2026-10-20T10:30:00+00:00"}
    ti = SimpleNamespace(xcom_pull=lambda task_ids: interval if task_ids == "data_interval"
                         else None)
    for task in dbt_tasks:
        assert "data_interval" in task.get_flat_relative_ids(upstream=True), task.task_id
        assert task.vars == INTERVAL_VARS, task.task_id
    rendered = {name: jinja2.Template(template).render(ti=ti)
                for name, template in dbt_tasks[0].vars.items()}
    assert rendered == interval
