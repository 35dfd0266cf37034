"""The dbt DAG (Cosmos) and the quality gate that decides whether the marts may be published."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from factory_platform.assets import gated_marts_asset, warehouse_asset_uri
from factory_platform.dag_factory import START_DATE, default_args
from factory_platform.dbt_project import (
    DBT_PROJECT_DIR,
    MANIFEST_PATH,
    ensure_fresh_manifest,
)
from factory_platform.sources import all_sources


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


# Rendered per dbt task from the data_interval task's result (Cosmos templates `vars`)
INTERVAL_VARS = {
    name: "{{ ti.xcom_pull(task_ids='data_interval')['" + name + "'] }}"
    for name in ("interval_start", "interval_end")
}


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
        ExecutionMode,
        LoadMode,
        TestBehavior,
        TestIndirectSelection,
    )
    from cosmos.profiles import PostgresUserPasswordProfileMapping

    profile = ProfileConfig(
        profile_name="factory_platform",
        target_name="airflow",
        profile_mapping=PostgresUserPasswordProfileMapping(
            conn_id="warehouse", profile_args={"schema": "staging", "threads": 1}
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
        dbt = DbtTaskGroup(
            group_id="dbt",
            project_config=project,
            profile_config=profile,
            execution_config=ExecutionConfig(
                execution_mode=ExecutionMode.LOCAL,
                # a test that spans two models (relationships) runs after the later one
                test_indirect_selection=TestIndirectSelection.CAUTIOUS,
            ),
            render_config=RenderConfig(
                load_method=LoadMode.DBT_MANIFEST,
                # one task per model: `dbt build` runs it, then its tests (fail fast, one
                # dbt start-up per model instead of two)
                test_behavior=TestBehavior.BUILD,
                # the gate's per-scope checks run in `dbt_gate_checks`, not with the models:
                # one bad scope must not stop the build (and the other scopes' publishing)
                exclude=["tag:gate"],
                emit_datasets=False,
            ),
            operator_args={
                "install_deps": False,
                # dbt would write manifest.json (2.5 MB) and run_results.json for every model
                # task; nothing reads them (Cosmos takes results from the in-process runner)
                # and writing them was ~40 % of each task's time
                "env": {"DBT_WRITE_JSON": "false"},
                # the incremental models process the interval data_interval chose
                "vars": INTERVAL_VARS,
            },
        )

        @task
        def data_interval(**context) -> dict[str, str]:
            """What this run's incremental models process: the windows of the load batches
            finished since the last successful run (a backfill's batches included), from
            ops.load_audit; a manual run processes everything (transform_window.py)."""
            from factory_platform.transform_window import open_run
            from factory_platform.warehouse import warehouse_dsn

            manual = "manual" in str(context["dag_run"].run_type).lower()
            return open_run(warehouse_dsn(), context["run_id"], everything=manual)

        @task
        def dbt_gate_checks(**context) -> dict:
            """The `gate`-tagged dbt tests, recorded per scope (site × day) in dq.check_result."""
            from factory_platform.quality.dbt_gate import run_dbt_gate
            from factory_platform.warehouse import warehouse_dsn

            checks = run_dbt_gate(warehouse_dsn(), context["run_id"])
            return {c.name: {"severity": c.severity, "failing_rows": c.failing_rows,
                             "failing_scopes": c.failing_scopes} for c in checks}

        @task
        def gx_gate_checks(**context) -> dict:
            """Great Expectations suites on staging, recorded per scope; an error suite that
            fails fails this task (its log names the expectation) — the scopes it blocks are
            in dq.scope_status, the others still flow on."""
            from factory_platform.quality.gx_suites import gx_quality_gate
            from factory_platform.warehouse import warehouse_dsn

            start, end = processed_interval(context)
            return gx_quality_gate(warehouse_dsn(), context["run_id"], start, end)

        @task(outlets=[gated_marts_asset()], trigger_rule="all_done")
        def quality_gate(**context) -> str:
            """Emits the gated-marts asset once dbt built everything and every gate check step
            completed — its results recorded, failing or not (a failing GX suite is a recorded
            result, not a reason to stop the other scopes). Publishing then reads
            dq.scope_status per scope, and posts only what this run's gate checked
            (dq.checked_publish).

            It fails closed (no retry, no asset event, the run's interval left to the next
            run) when dbt or any check step did not complete: a crashed step wrote no
            completion row in dq.gate_step (quality/checked.py). It is the DAG's only leaf, so
            its state is what the run's state shows."""
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
        data_interval() >> dbt >> [dbt_checks, gx_checks]
        [dbt_checks, gx_checks] >> quality_gate()

    return transform()
