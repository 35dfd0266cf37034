"""What a transform_dbt run processes: the windows of the load batches finished since the last
run that succeeded (ops.load_audit), recorded in ops.transform_run for the incremental models,
and the dbt selection of the models downstream of what those batches changed, built by one dbt
process; a manual run, and the first run of a warehouse, process everything."""

from __future__ import annotations

import json

import psycopg
import pytest
from factory_platform.transform import SELECT_TEMPLATE
from factory_platform.transform_window import (
    EVERYTHING,
    RUN_ID_ENV,
    SELECT_EVERYTHING,
    changed_entities,
    close_run,
    open_run,
    run_selection,
)


@pytest.fixture()
def warehouse(pg):
    from factory_platform.warehouse import ensure_warehouse

    dsn = pg.create_database("transform_window")
    ensure_warehouse(dsn)
    return dsn


def loaded(dsn: str, batch: str, window_start: str, interval_end: str, finished_ago: str,
           entity: str = "mes.confirmations", rows: int = 1, status: str = "loaded"):
    """A load batch in the audit, finished `finished_ago` (an SQL interval) before now."""
    system, name = entity.split(".")
    with psycopg.connect(dsn) as conn:
        conn.execute("""
            insert into ops.load_audit (batch_id, system, entity, interval_start, interval_end,
                window_start, source, rows_read, rows_loaded, rows_quarantined,
                duplicates_skipped, rows_replaced, started_at, finished_at, status)
            values (%s, %s, %s, %s::timestamptz + interval '2 hours', %s, %s,
                    'page', %s, %s, 0, 0, 0, now(), now() - %s::interval, %s)""",
            (batch, system, name, window_start, interval_end, window_start, rows, rows,
             finished_ago, status))


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


def test_a_run_selects_the_entities_its_batches_changed(warehouse):
    open_run(warehouse, "run-1")
    marked(warehouse, "run-1", "1 hour")
    loaded(warehouse, "old", "2026-10-19T00:00:00+00:00", "2026-10-19T01:00:00+00:00", "3 hours",
           entity="mes.confirmations")  # before the last run: taken then
    loaded(warehouse, "q1", "2026-10-20T08:00:00+00:00", "2026-10-20T09:00:00+00:00", "5 min",
           entity="qms.inspection_results")
    loaded(warehouse, "q2", "2026-10-20T09:00:00+00:00", "2026-10-20T10:00:00+00:00", "4 min",
           entity="qms.inspection_results")
    loaded(warehouse, "w", "2026-10-20T08:00:00+00:00", "2026-10-20T09:00:00+00:00", "3 min",
           entity="wms.movements", rows=0)  # an empty window: nothing changed
    loaded(warehouse, "e", "2026-10-20T08:00:00+00:00", "2026-10-20T09:00:00+00:00", "2 min",
           entity="erp.materials", status="rejected")  # nothing loaded
    open_run(warehouse, "run-2")
    assert changed_entities(warehouse, "run-2") == [("qms", "inspection_results")]
    # a manual run, and the first run, process everything: no selection
    open_run(warehouse, "manual-1", everything=True)
    assert changed_entities(warehouse, "manual-1") is None


@pytest.fixture(scope="module")
def manifest(project_root):
    import os

    from factory_platform.dbt_project import MANIFEST_PATH, ensure_fresh_manifest

    ensure_fresh_manifest(dict(os.environ))
    return json.loads(MANIFEST_PATH.read_text())


def test_the_selection_is_what_the_changed_sources_feed(manifest):
    assert run_selection(None, manifest) == SELECT_EVERYTHING
    selection = run_selection([("qms", "inspection_results"), ("scada", "tag_values"),
                               ("nosuch", "entity")], manifest).split()
    changed = [s for s in selection if s.startswith("source:")]
    # the historian's file list is part of its entity
    assert changed == ["source:qms.inspection_results+", "source:scada.tag_values+",
                       "source:scada.tag_values__files+"]
    # the marts over the platform's own bookkeeping (load audit, gate results, ERP outbox):
    # tables every run's loads, gate and postings change
    bookkeeping = {s for s in selection if not s.startswith("source:")}
    assert {"mart_source_health+", "mart_data_quality+", "mart_erp_reconciliation+"} <= bookkeeping
    assert all(manifest["nodes"][f"model.factory_platform.{s[:-1]}"]["config"]["materialized"]
               in ("table", "incremental") for s in bookkeeping)
    # nothing changed: the bookkeeping marts only
    assert set(run_selection([], manifest).split()) == bookkeeping


@pytest.fixture(scope="module")
def transform(project_root):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(project_root / "dags" / "transform_dbt.py")).get_dag(
        "transform_dbt")


def test_one_dbt_process_builds_the_selection_and_a_task_reports_each_model(transform):
    """The producer (one `dbt build`) runs after data_interval, selects what it chose, names
    the run to dbt in the environment (no per-run --vars); the gate checks follow it; each
    model, seed and snapshot is a task after it that starts no dbt."""
    from factory_platform.transform_watch import DbtNodeResult

    producer = transform.get_task("dbt.dbt_producer_watcher")
    assert producer.upstream_task_ids == {"data_interval"}
    assert producer.select == SELECT_TEMPLATE
    assert producer.exclude == "tag:gate"
    assert not producer.vars and producer.dbt_cmd_flags == []
    assert producer.env[RUN_ID_ENV] == "{{ run_id }}"
    assert producer.retries == 0
    assert {"dbt_gate_checks", "gx_gate_checks"} <= producer.downstream_task_ids
    nodes = [t for t in transform.tasks if isinstance(t, DbtNodeResult)]
    assert len(nodes) > 80
    assert {t.task_id for t in nodes} >= {"dbt.stg_mes__confirmations_run",
                                          "dbt.mart_quality_run", "dbt.plant_sites_seed"}
    for node in nodes:
        assert "dbt.dbt_producer_watcher" in node.get_flat_relative_ids(upstream=True), node
        assert node.producer_task_id == "dbt.dbt_producer_watcher"
