"""The dbt DAG (Cosmos, watcher mode) and the quality gate that decides whether the marts may be
published.

A run builds in one dbt process: Cosmos' watcher producer (`dbt.dbt_producer_watcher`) runs
`dbt build` over the models downstream of the sources that changed since the last successful run
(`data_interval`: transform_window.py; a manual or first run builds everything), with the tests
of each model right after it (dbt skips what is downstream of a failure). The interval reaches
the incremental models through ops.transform_run, not `--vars` (macros/production/interval.sql):
dbt's partial parsing holds. Each model (seed, snapshot) is still a task, `dbt.<model>_run`:
it reports what the build did with the model and the tests on it (transform_watch.py), and is
skipped when the run did not build it; it runs in the triggerer, so ~100 of them take no
worker slot and end within seconds of the build. The gate checks follow the producer, not the
model tasks: the models' reports are for people and do not hold back the gate and publishing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from factory_platform.assets import gated_marts_asset, warehouse_asset_uri
from factory_platform.dag_factory import (
    PRIORITY_TO_ERP,
    START_DATE,
    default_args,
    priority,
)
from factory_platform.dbt_project import (
    DBT_PROJECT_DIR,
    MANIFEST_PATH,
    dbt_executable,
    ensure_fresh_manifest,
)
from factory_platform.sources import all_sources
from factory_platform.transform_window import RUN_ID_ENV


def raw_asset_refs():
    """References (by URI) to the raw tables' assets, which the extract DAGs produce.

    References rather than `Asset` objects: the extract DAGs define the assets; and Airflow
    hashes a DAG's schedule on every task dependency it sets, so ~70 full `Asset`s cost
    ~0.3 s of parse time across Cosmos' ~120 dependencies, references almost nothing.
    (Airflow then hands the runs no triggering events: what a run processes comes from the
    load audit, transform_window.py.)
    """
    from airflow.sdk import Asset

    return [Asset.ref(uri=warehouse_asset_uri(f"raw_{s.system}", e.name))
            for s in all_sources().values() for e in s.entities]


def processed_interval(context) -> tuple[datetime, datetime]:
    """The interval this run's incremental models process (the data_interval task's result);
    everything up to now when they process everything."""
    interval = context["ti"].xcom_pull(task_ids="data_interval") or {}
    if not interval.get("interval_start"):
        return datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC)
    return (datetime.fromisoformat(interval["interval_start"]),
            datetime.fromisoformat(interval["interval_end"]))


# The producer's --select, rendered from the data_interval task's result (Cosmos templates it)
SELECT_TEMPLATE = "{{ ti.xcom_pull(task_ids='data_interval')['select'] }}"
# What every production build leaves out besides the gate's tests:
# - unit tests: they test a model's SQL on fixed inputs, which no load changes; `make test`
#   (tests/_pipeline.py) and a developer's `make dbt-ci` run them. In a run they were 18 of
#   ~490 nodes and ~10 % of dbt's CPU time.
PRODUCTION_BUILD_FLAGS = ["--exclude-resource-type", "unit_test"]
# dbt threads of the run's one dbt process: models of different sources build side by side (the
# work is Postgres'; 4 as the tests' full builds, on 2 cores)
DBT_THREADS = 4


def _node_result_task(dag, task_group, node, task_id, **_):
    """Cosmos node converter: a model's (seed's, snapshot's) task is a DbtNodeResult, which
    reports what the producer's build did with it (transform_watch.py) instead of a Cosmos
    sensor."""
    from factory_platform.transform_watch import DbtNodeResult

    # no retry: what the build did with the node stays what it is until the next run (a failed
    # report's trigger that crashed is re-run by clearing the task: it starts no dbt)
    return DbtNodeResult(task_id=task_id, dag=dag, task_group=task_group,
                         unique_id=node.unique_id, retries=0)


def _wire_watchers(group):
    """The producer of a watcher-mode DbtTaskGroup, made the first task of the group: every
    node task without an upstream task runs after it, whatever its end (it then reports the
    node's result, or that it was not built); the others run unless an upstream node task
    failed (a model the run did not build is skipped, its downstream models still report).
    Returns the producer."""
    from airflow.task.trigger_rule import TriggerRule
    from cosmos.operators.watcher import DbtProducerWatcherOperator

    from factory_platform.transform_watch import BufferedDbtProducer

    tasks = list(group.children.values())
    producer = next(t for t in tasks if isinstance(t, DbtProducerWatcherOperator))
    # its node results reach XCom once, when dbt ends (transform_watch.py); the class adds
    # no state, so the operator Cosmos made becomes one in place
    producer.__class__ = BufferedDbtProducer
    for task in tasks:
        if task is producer or task.task_id.endswith("_done"):
            continue
        if not task.upstream_task_ids:
            producer >> task
            task.trigger_rule = TriggerRule.ALL_DONE
        else:
            task.trigger_rule = TriggerRule.NONE_FAILED
    return producer


def build_transform_dag(doc_md: str | None):
    from airflow.sdk import dag, task
    from airflow.sdk.definitions.asset import AssetAny
    from cosmos import (
        DbtTaskGroup,
        ExecutionConfig,
        ProfileConfig,
        ProjectConfig,
        RenderConfig,
    )
    from cosmos.constants import (
        DbtResourceType,
        ExecutionMode,
        InvocationMode,
        LoadMode,
        TestBehavior,
    )
    from cosmos.profiles import PostgresUserPasswordProfileMapping

    profile = ProfileConfig(
        profile_name="factory_platform",
        target_name="airflow",
        profile_mapping=PostgresUserPasswordProfileMapping(
            conn_id="warehouse", profile_args={"schema": "staging", "threads": DBT_THREADS}
        ),
    )

    # a model added or changed in dbt_project/ since the manifest was parsed: re-parse it now
    # (once, under a lock), so this DAG shows it without a restart (dbt_project.py)
    ensure_fresh_manifest()

    @dag(
        dag_id="transform_dbt",
        schedule=AssetAny(*raw_asset_refs()),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        tags=["transform", "dbt", "staging", "conformed", "marts"],
        doc_md=doc_md,
    )
    def transform():
        project = ProjectConfig(dbt_project_path=DBT_PROJECT_DIR, manifest_path=MANIFEST_PATH,
                                project_name="factory_platform")
        # Cosmos wraps the manifest path in an ObjectStoragePath, whose open() sets up hook
        # lineage and so loads every plugin (FastAPI included): 0.2 s of each parse of this
        # file. The manifest is a local file; a plain Path reads it the same.
        project.manifest_path = Path(MANIFEST_PATH)
        node_result = {kind: _node_result_task for kind in (
            DbtResourceType.MODEL, DbtResourceType.SEED, DbtResourceType.SNAPSHOT)}
        dbt = DbtTaskGroup(
            group_id="dbt",
            project_config=project,
            profile_config=profile,
            execution_config=ExecutionConfig(
                execution_mode=ExecutionMode.WATCHER,
                # dbt in its own process, its JSON log read line by line: the node results
                # arrive from the info-level lines (in-process, Cosmos' callback would turn
                # every debug event into JSON and push four XComs per node — measured 346 s
                # for a whole build that takes dbt 120 s)
                invocation_mode=InvocationMode.SUBPROCESS,
                dbt_executable_path=str(dbt_executable()),
                # the producer: one `dbt build` per run; a retry would build it all again
                # (Cosmos' producer skips a retry anyway), the next run rebuilds what failed
                setup_operator_args={"retries": 0, **priority(PRIORITY_TO_ERP)},
            ),
            render_config=RenderConfig(
                load_method=LoadMode.DBT_MANIFEST,
                # no test tasks: the producer's build runs each model's tests right after it,
                # and the model's task reports them (transform_watch.py)
                test_behavior=TestBehavior.NONE,
                # the gate's per-scope checks run in `dbt_gate_checks`, not with the models:
                # one bad scope must not stop the build (and the other scopes' publishing)
                exclude=["tag:gate"],
                emit_datasets=False,
                node_converters=node_result,
            ),
            operator_args={
                "install_deps": False,
                "env": {
                    # dbt would write manifest.json (2.5 MB) and run_results.json; nothing
                    # reads them (the node results reach the tasks through XCom)
                    "DBT_WRITE_JSON": "false",
                    # nor its debug log file (every query's SQL, into the temporary project
                    # folder Cosmos deletes): ~15 % of dbt's CPU time in a build of ~500 nodes
                    "DBT_LOG_LEVEL_FILE": "none",
                    # the run whose interval (ops.transform_run) the incremental models read
                    RUN_ID_ENV: "{{ run_id }}",
                },
            },
        )
        producer = _wire_watchers(dbt)
        # what the run builds, from data_interval (TestBehavior.NONE had Cosmos limit the
        # build to models, seeds and snapshots with --resource-type: the tests run too)
        producer.select = SELECT_TEMPLATE
        producer.dbt_cmd_flags = list(PRODUCTION_BUILD_FLAGS)
        # each test's result under its own key (the node tasks report them one by one), not
        # only Cosmos' aggregate per model
        producer.tests_per_model = {}

        @task(**priority(PRIORITY_TO_ERP))
        def data_interval(**context) -> dict[str, str]:
            """What this run processes (transform_window.py): the windows of the load batches
            finished since the last successful run (a backfill's batches included), from
            ops.load_audit, recorded in ops.transform_run for the incremental models; and the
            dbt selection of the models downstream of what those batches changed. A manual
            run processes everything, unless its conf says {"changed_only": true}.
            Also which tests are on which node, from the manifest read here once, for the
            producer's per-node reports that the model tasks read (transform_watch.py)."""
            import json

            from factory_platform.transform_watch import TESTS_XCOM_KEY, tests_by_node
            from factory_platform.transform_window import (
                changed_entities,
                open_run,
                run_selection,
            )
            from factory_platform.warehouse import warehouse_dsn

            dsn, run_id = warehouse_dsn(), context["run_id"]
            manual = "manual" in str(context["dag_run"].run_type).lower()
            changed_only = bool((context["dag_run"].conf or {}).get("changed_only"))
            interval = open_run(dsn, run_id, everything=manual and not changed_only)
            changed = changed_entities(dsn, run_id)
            manifest = json.loads(Path(MANIFEST_PATH).read_text())
            select = run_selection(changed, manifest)
            context["ti"].xcom_push(key=TESTS_XCOM_KEY, value=tests_by_node(manifest))
            print(f"changed since the last successful run: "
                  f"{'everything' if changed is None else changed}; dbt --select {select}")
            return {**interval, "select": select}

        @task(**priority(PRIORITY_TO_ERP))
        def dbt_gate_checks(**context) -> dict:
            """The `gate`-tagged dbt tests, recorded per scope (site × day) in dq.check_result."""
            from factory_platform.quality.dbt_gate import run_dbt_gate
            from factory_platform.warehouse import warehouse_dsn

            checks = run_dbt_gate(warehouse_dsn(), context["run_id"])
            return {c.name: {"severity": c.severity, "failing_rows": c.failing_rows,
                             "failing_scopes": c.failing_scopes} for c in checks}

        @task(**priority(PRIORITY_TO_ERP))
        def gx_gate_checks(**context) -> dict:
            """Great Expectations suites on staging, recorded per scope; an error suite that
            fails fails this task (its log names the expectation) — the scopes it blocks are
            in dq.scope_status, the others still flow on."""
            from factory_platform.quality.gx_suites import gx_quality_gate
            from factory_platform.warehouse import warehouse_dsn

            start, end = processed_interval(context)
            return gx_quality_gate(warehouse_dsn(), context["run_id"], start, end)

        @task(outlets=[gated_marts_asset()], trigger_rule="all_done", **priority(PRIORITY_TO_ERP))
        def quality_gate(**context) -> str:
            """Emits the gated-marts asset once dbt built the run's selection and every gate
            check step completed — its results recorded, failing or not (a failing GX suite is
            a recorded result, not a reason to stop the other scopes). Publishing then reads
            dq.scope_status per scope, and posts only what this run's gate checked
            (dq.checked_publish).

            It fails closed (no retry, no asset event, the run's interval left to the next
            run) when dbt or any check step did not complete: a crashed step wrote no
            completion row in dq.gate_step (quality/checked.py). Besides the model tasks (a
            failed model fails the run too), it is the DAG's leaf: the run fails when it does."""
            from airflow.sdk.exceptions import AirflowFailException

            from factory_platform.quality.checked import GateIncomplete, close_gate
            from factory_platform.transform_window import close_run
            from factory_platform.warehouse import warehouse_dsn

            try:
                close_gate(warehouse_dsn(), context["run_id"])
            except GateIncomplete as error:
                raise AirflowFailException(
                    f"{error} (see the red upstream task): nothing is published from this "
                    f"run") from error
            close_run(warehouse_dsn(), context["run_id"])  # the next run starts from here
            return f"marts gated by {context['run_id']}"

        dbt_checks = dbt_gate_checks()
        gx_checks = gx_gate_checks()
        data_interval() >> producer >> [dbt_checks, gx_checks]
        [dbt_checks, gx_checks] >> quality_gate()

    return transform()
