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


def test_a_batch_a_successful_run_took_is_not_taken_again_within_the_overlap(warehouse):
    """The overlap catches a batch committed after a run looked; it does not hand the next runs
    the batches the last one took: an hourly ERP batch selects the ERP's models once, not for
    ten minutes of runs."""
    open_run(warehouse, "run-1")
    marked(warehouse, "run-1", "1 hour")
    loaded(warehouse, "erp", "2026-10-19T00:00:00+00:00", "2026-10-20T10:00:00+00:00", "3 min",
           entity="erp.production_orders")
    assert open_run(warehouse, "run-2")["interval_start"] == "2026-10-19T00:00:00+00:00"
    assert changed_entities(warehouse, "run-2") == [("erp", "production_orders")]
    close_run(warehouse, "run-2")
    loaded(warehouse, "mes", "2026-10-20T09:58:00+00:00", "2026-10-20T10:03:00+00:00", "1 min")
    # committed after run-2 looked, finished before its mark: within the overlap, taken
    loaded(warehouse, "late", "2026-10-20T09:50:00+00:00", "2026-10-20T10:01:00+00:00", "4 min",
           entity="qms.inspection_results")
    assert open_run(warehouse, "run-3") == {"interval_start": "2026-10-20T09:50:00+00:00",
                                             "interval_end": "2026-10-20T10:03:00+00:00"}
    assert changed_entities(warehouse, "run-3") == [("mes", "confirmations"),
                                                    ("qms", "inspection_results")]
    close_run(warehouse, "run-3")
    interval = open_run(warehouse, "run-4")  # nothing new
    assert interval["interval_start"] == interval["interval_end"] != ""
    assert changed_entities(warehouse, "run-4") == []


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
    # no per-run --vars; no unit tests (CI's, on fixed inputs) and no debug log file: a
    # minute-level build spends its CPU on the data
    assert not producer.vars
    assert producer.dbt_cmd_flags == ["--exclude-resource-type", "unit_test"]
    assert producer.env[RUN_ID_ENV] == "{{ run_id }}"
    assert producer.env["DBT_LOG_LEVEL_FILE"] == "none"
    assert producer.retries == 0
    assert {"dbt_gate_checks", "gx_gate_checks"} <= producer.downstream_task_ids
    nodes = [t for t in transform.tasks if isinstance(t, DbtNodeResult)]
    assert len(nodes) > 80
    assert {t.task_id for t in nodes} >= {"dbt.stg_mes__confirmations_run",
                                          "dbt.mart_quality_run", "dbt.plant_sites_seed"}
    for node in nodes:
        assert "dbt.dbt_producer_watcher" in node.get_flat_relative_ids(upstream=True), node
        assert node.producer_task_id == "dbt.dbt_producer_watcher"
        assert node.retries == 0
        # it runs in the triggerer, its trigger told which node and where its results are
        assert node.start_from_trigger
        assert node.start_trigger_args.trigger_cls == (
            "factory_platform.transform_watch.NodeResultTrigger")
        assert node.start_trigger_args.trigger_kwargs == {
            "unique_id": node.unique_id, "producer_task_id": "dbt.dbt_producer_watcher"}


# --- what a model's task reports: Cosmos' producer writes, DbtNodeResult reads -----------------

MART = "model.factory_platform.mart_oee_shift"
SEED = "seed.factory_platform.plant_sites"
DOWNSTREAM = "model.factory_platform.mart_oee_line_day"  # reads mart_oee_shift


def test_a_test_belongs_to_the_node_its_yml_attaches_it_to(manifest):
    """`tests_by_node` (data_interval computes it once per run for the model tasks): a
    relationships test from the mart to plant_sites is the mart's, not the seed's; unit tests,
    which production builds leave out, are nobody's."""
    from factory_platform.transform_watch import tests_by_node

    owned = tests_by_node(manifest)
    to_sites = [t for t in manifest["child_map"][SEED] if t.startswith("test.factory_platform."
                                                                        "relationships_")]
    assert len(to_sites) > 5  # every fact and mart with a site_code refers to the seed
    assert not set(to_sites) & set(owned[SEED])
    assert owned[SEED] == sorted(t for t in manifest["child_map"][SEED] if t.startswith("test.")
                                 and manifest["nodes"][t]["attached_node"] == SEED)
    mart_tests = owned[MART]
    assert [t for t in mart_tests if "__ref_plant_sites_" in t] == [
        t for t in to_sites if t.startswith("test.factory_platform.relationships_mart_oee_shift_")]
    unit_test = ("unit_test.factory_platform.mart_oee_shift."
                 "oee_shift_availability_effectiveness_quality_and_oee")
    assert unit_test in manifest["child_map"][MART]
    assert not [t for ts in owned.values() for t in ts if t.startswith("unit_test.")]
    assert all(manifest["nodes"][t]["attached_node"] == MART for t in mart_tests
               if t.startswith("test."))


def dbt_log_lines(unique_id: str, status: str, message: str = "") -> list[str]:
    """What `dbt build --log-format json` prints about a node that ended with `status`, made by
    dbt's own event classes: its NodeFinished; after an upstream failure the SkippingDetails
    before it; for a failure, the end-of-run RunResultFailure and RunResultError (dbt's
    printer.print_run_result_error)."""
    from dbt.events import types
    from dbt_common.events.base_types import EventLevel, msg_from_base_event
    from dbt_common.events.functions import msg_to_json

    kind, _, name = unique_id.split(".")[:3]
    node_info = {"unique_id": unique_id, "resource_type": kind, "node_name": name,
                 "node_status": status, "node_path": f"{name}.sql",
                 "node_started_at": "2026-12-03T10:00:00",
                 "node_finished_at": "2026-12-03T10:00:01"}
    events = [types.NodeFinished(node_info=node_info, run_result={
        "status": status, "message": message, "thread": "Thread-1", "execution_time": 1.0,
        "num_failures": 3 if status == "fail" else 0})]
    if status == "skipped":
        events.insert(0, types.SkippingDetails(node_info=node_info, resource_type=kind,
                                               schema="marts", node_name=name, index=1, total=1))
    if status in ("fail", "error"):
        events += [types.RunResultFailure(resource_type=kind, node_name=name,
                                          path=f"{name}.sql", node_info=node_info),
                   types.RunResultError(msg=message, node_info=node_info)]
    return [msg_to_json(msg_from_base_event(event, level=EventLevel.INFO)) for event in events]


class RunXCom:
    """One run's XCom, as the producer pushes it and the model tasks pull it. The task
    instances are stand-ins: what is under test is Cosmos' keys and values (the contract
    DbtNodeResult relies on), read through the producer's own log parser."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], object] = {}

    def ti(self, task_id: str):
        from types import SimpleNamespace

        def push(key, value):
            self.values[(task_id, key)] = value

        def pull(task_ids, key, map_indexes=None):
            return self.values.get((task_ids, key))

        return SimpleNamespace(task_id=task_id, dag_id="transform_dbt", run_id="manual__test",
                               xcom_push=push,
                               xcom_pull=pull)


def test_each_model_task_reports_what_the_producers_build_did(transform, manifest, monkeypatch):
    """dbt's JSON log lines of a build, through the producer's own parser (Cosmos, as
    transform_dbt configures it), then each model's task — so this fails loudly if Cosmos
    changes its XCom keys or values, or its rewrite of a skip after an upstream failure. The
    build: mart_oee_shift fails (as a broken contract does), so dbt skips its tests (its
    relationships tests to plant_sites too) and the marts that read it; mart_quality is built
    but a test on it fails; mart_production_line_day is not built."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    from factory_platform.transform_watch import (
        TESTS_XCOM_KEY,
        node_report_key,
        node_reports,
        tests_by_node,
    )

    owned = tests_by_node(manifest)
    xcom = RunXCom()
    xcom.ti("data_interval").xcom_push(TESTS_XCOM_KEY, owned)
    producer = transform.get_task("dbt.dbt_producer_watcher")
    results = producer.start_node_results()  # as its execute() does before dbt starts
    parse = producer._make_parse_callable()
    context = {"ti": xcom.ti(producer.task_id)}  # the parser must not push to it: only at the end
    tested = "model.factory_platform.mart_quality"
    failing = next(t for t in owned[tested] if t.startswith("test.factory_platform.not_null_"))
    lines = dbt_log_lines(SEED, "success", "INSERT 0 3")
    for test in owned[SEED]:
        lines += dbt_log_lines(test, "pass")
    lines += dbt_log_lines(MART, "error", "Database Error in model mart_oee_shift: null value "
                           "in column \"shift_id\" violates not-null constraint")
    for skipped in [*owned[MART], DOWNSTREAM]:
        lines += dbt_log_lines(skipped, "skipped")
    lines += dbt_log_lines(tested, "success", "SELECT 120")
    for test in owned[tested]:
        lines += dbt_log_lines(test, *(("fail", "Got 3 results, configured to fail if != 0")
                                       if test == failing else ("pass",)))
    for line in lines:
        parse(line, {"context": context})
    assert xcom.values == {("data_interval", TESTS_XCOM_KEY): owned}  # nothing pushed per node
    # dbt ended: one report per node it reached, as the producer's execute pushes them
    nodes = [t.unique_id for t in transform.tasks if type(t).__name__ == "DbtNodeResult"]
    reports = node_reports(results.results(), owned, nodes)
    assert set(reports) == {SEED, MART, DOWNSTREAM, tested}
    assert reports[tested]["tests"] == [
        [test, "fail", "Got 3 results, configured to fail if != 0"] if test == failing
        else [test, "pass", ""] for test in owned[tested]]
    for unique_id, report in reports.items():
        xcom.ti(producer.task_id).xcom_push(node_report_key(unique_id), report)

    def report(unique_id: str, producer_state: str = "failed"):
        task = next(t for t in transform.tasks if getattr(t, "unique_id", None) == unique_id)
        monkeypatch.setattr("factory_platform.transform_watch.producer_state",
                            lambda dag_id, run_id, task_id: producer_state)
        return task.execute({"ti": xcom.ti(task.task_id), "run_id": "manual__test"})

    # the seed and its own tests passed: the mart's skipped relationships tests to it are the
    # mart's, they do not fail the seed
    assert report(SEED) == f"success; {len(owned[SEED])} test(s) on it"
    with pytest.raises(AirflowFailException) as failed:
        report(MART)
    assert str(failed.value) == (f"dbt error {MART}: Database Error in model mart_oee_shift: "
                                 f"null value in column \"shift_id\" violates not-null "
                                 f"constraint")
    with pytest.raises(AirflowFailException) as failed:
        report(DOWNSTREAM)
    assert str(failed.value) == (f"dbt did not build {DOWNSTREAM}: something upstream of it "
                                 f"failed (the producer log names it)")
    with pytest.raises(AirflowFailException) as failed:
        report(tested)
    assert str(failed.value) == (f"1 test(s) on {tested} failed: {failing} (fail: Got 3 "
                                 f"results, configured to fail if != 0)")
    not_built = "model.factory_platform.mart_production_line_day"
    with pytest.raises(AirflowSkipException, match="not in this run's selection"):
        report(not_built, producer_state="success")
    with pytest.raises(AirflowSkipException, match=r"was not built: .*, failed\) ended before"):
        report(not_built, producer_state="failed")


def test_after_a_build_that_succeeded_the_producer_skips_what_it_did_not_select(
        transform, manifest, monkeypatch):
    """A build that reached only the seed and its tests: the producer pushes the seed's report
    and skips every other node task itself (one Execution API call, no trigger each). A build
    that failed skips nothing: each node task then reports whether the build reached it."""
    from airflow.sdk.exceptions import AirflowException, DownstreamTasksSkipped
    from cosmos.operators.watcher import DbtProducerWatcherOperator
    from factory_platform.transform_watch import (
        TESTS_XCOM_KEY,
        node_report_key,
        tests_by_node,
    )

    owned = tests_by_node(manifest)
    producer = transform.get_task("dbt.dbt_producer_watcher")
    node_tasks = {t.task_id: t.unique_id for t in transform.tasks
                  if type(t).__name__ == "DbtNodeResult"}
    seed_task = next(task for task, node in node_tasks.items() if node == SEED)

    def build(failing: bool):
        def execute(self, context, **_):
            parse = self._make_parse_callable()
            lines = dbt_log_lines(SEED, "success", "INSERT 0 3")
            for test in owned[SEED]:
                lines += dbt_log_lines(test, "pass")
            if failing:
                lines += dbt_log_lines(MART, "error", "Database Error in model mart_oee_shift")
            for line in lines:
                parse(line)
            if failing:
                raise AirflowException("dbt build failed")
        return execute

    def run_producer(xcom: RunXCom, failing: bool) -> None:
        xcom.ti("data_interval").xcom_push(TESTS_XCOM_KEY, owned)
        monkeypatch.setattr(DbtProducerWatcherOperator, "execute", build(failing))
        producer.execute({"ti": xcom.ti(producer.task_id)})

    succeeded = RunXCom()
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        run_producer(succeeded, failing=False)
    assert sorted(skipped.value.tasks) == sorted(set(node_tasks) - {seed_task})
    assert len(skipped.value.tasks) > 80
    assert {key for task, key in succeeded.values if task == producer.task_id} == {
        node_report_key(SEED)}

    failed = RunXCom()
    with pytest.raises(AirflowException, match="dbt build failed"):  # not DownstreamTasksSkipped
        run_producer(failed, failing=True)
    assert {key for task, key in failed.values if task == producer.task_id} == {
        node_report_key(SEED), node_report_key(MART)}
    assert failed.values[(producer.task_id, node_report_key(MART))]["status"] == "error"
