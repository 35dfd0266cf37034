"""What a transform_dbt run processes: the windows of the load batches finished since the last
run that succeeded (ops.load_audit), handed to every dbt task as the incremental models'
interval vars; a manual run, and the first run of a warehouse, process everything."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
import pytest
from factory_platform.transform import INTERVAL_VARS
from factory_platform.transform_window import EVERYTHING, close_run, open_run


@pytest.fixture()
def warehouse(pg):
    from factory_platform.warehouse import ensure_warehouse

    dsn = pg.create_database("transform_window")
    ensure_warehouse(dsn)
    return dsn


def loaded(dsn: str, batch: str, window_start: str, interval_end: str, finished_ago: str):
    """A load batch in the audit, finished `finished_ago` (an SQL interval) before now."""
    with psycopg.connect(dsn) as conn:
        conn.execute("""
            insert into ops.load_audit (batch_id, system, entity, interval_start, interval_end,
                window_start, source, rows_read, rows_loaded, rows_quarantined,
                duplicates_skipped, rows_replaced, started_at, finished_at)
            values (%s, 'mes', 'confirmations', %s::timestamptz + interval '2 hours', %s, %s,
                    'page', 1, 1, 0, 0, 0, now(), now() - %s::interval)""",
            (batch, window_start, interval_end, window_start, finished_ago))


def marked(dsn: str, run_id: str, ago: str) -> None:
    """Run `run_id` looked at the audit `ago` before now and succeeded."""
    close_run(dsn, run_id)
    with psycopg.connect(dsn) as conn:
        conn.execute("update ops.transform_run set audit_upto = now() - %s::interval "
                     "where run_id = %s", (ago, run_id))


def test_the_first_run_of_a_warehouse_processes_everything(warehouse):
    loaded(warehouse, "b1", "2026-10-20T06:00:00+00:00", "2026-10-20T09:00:00+00:00", "1 hour")
    assert open_run(warehouse, "run-1") == EVERYTHING


def test_a_run_processes_the_windows_of_the_batches_since_the_last_success(warehouse):
    open_run(warehouse, "run-1")
    marked(warehouse, "run-1", "1 hour")
    loaded(warehouse, "old", "2026-10-19T00:00:00+00:00", "2026-10-19T01:00:00+00:00", "3 hours")
    loaded(warehouse, "mes", "2026-10-20T08:00:00+00:00", "2026-10-20T10:15:00+00:00", "30 min")
    loaded(warehouse, "scada", "2026-10-20T06:00:00+00:00", "2026-10-20T10:00:00+00:00",
           "65 min")  # before the mark, but within the overlap
    assert open_run(warehouse, "run-2") == {"interval_start": "2026-10-20T06:00:00+00:00",
                                             "interval_end": "2026-10-20T10:15:00+00:00"}


def test_a_failed_run_leaves_its_batches_to_the_next(warehouse):
    open_run(warehouse, "run-1")
    marked(warehouse, "run-1", "2 hours")
    loaded(warehouse, "b1", "2026-10-20T06:00:00+00:00", "2026-10-20T09:00:00+00:00", "90 min")
    first = open_run(warehouse, "run-2")  # fails: never closed
    loaded(warehouse, "b2", "2026-10-20T09:00:00+00:00", "2026-10-20T11:00:00+00:00", "1 min")
    assert first["interval_end"] == "2026-10-20T09:00:00+00:00"
    assert open_run(warehouse, "run-3") == {"interval_start": "2026-10-20T06:00:00+00:00",
                                             "interval_end": "2026-10-20T11:00:00+00:00"}


def test_nothing_loaded_since_gives_an_empty_interval(warehouse):
    open_run(warehouse, "run-1")
    close_run(warehouse, "run-1")
    interval = open_run(warehouse, "run-2")
    assert interval["interval_start"] == interval["interval_end"] != ""


def test_a_manual_run_processes_everything(warehouse):
    open_run(warehouse, "run-1")
    marked(warehouse, "run-1", "1 hour")
    loaded(warehouse, "b1", "2026-10-20T06:00:00+00:00", "2026-10-20T09:00:00+00:00", "1 min")
    assert open_run(warehouse, "manual-1", everything=True) == EVERYTHING


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
