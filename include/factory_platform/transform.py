"""The dbt DAG (Cosmos) and the quality gate that decides whether the marts may be published."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from factory_platform.assets import warehouse_asset_uri
from factory_platform.dag_factory import START_DATE, default_args
from factory_platform.dbt_project import DBT_PROJECT_DIR, MANIFEST_PATH
from factory_platform.sources import all_sources

GATED_MARTS_URI = "gate://warehouse/marts"


def gated_marts_asset():
    """Updated when a transform run built every model (their tests passed) and recorded the
    gate checks per scope; publishing then decides per scope from dq.scope_status."""
    from airflow.sdk import Asset

    return Asset(GATED_MARTS_URI)


def raw_asset_refs():
    """References (by URI) to the raw tables' assets, which the extract DAGs produce.

    References rather than `Asset` objects: the extract DAGs define the assets; and Airflow
    hashes a DAG's schedule on every task dependency it sets, so ~70 full `Asset`s cost
    ~0.3 s of parse time across Cosmos' ~120 dependencies, references almost nothing.
    """
    from airflow.sdk import Asset

    return [Asset.ref(uri=warehouse_asset_uri(f"raw_{s.system}", e.name))
            for s in all_sources().values() for e in s.entities]


def triggered_window(context) -> tuple[datetime, datetime] | None:
    """The union of what the extraction runs behind the asset events that triggered this run
    read: their data intervals, each widened by its source's lookback (PATTERNS.md §4). None
    for a run no extraction triggered (manual)."""
    starts, ends = [], []
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            extra = event.extra or {}
            if "interval_start" in extra and "interval_end" in extra:
                starts.append(datetime.fromisoformat(
                    extra.get("window_start") or extra["interval_start"]))
                ends.append(datetime.fromisoformat(extra["interval_end"]))
    return (min(starts), max(ends)) if starts else None


def triggering_interval(context) -> tuple[datetime, datetime]:
    """The triggered window; a manual run covers everything up to now."""
    return triggered_window(context) or (datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))


def dbt_interval_vars(context) -> dict[str, str]:
    """The dbt vars of this run's incremental models: the triggered window, or empty strings
    (everything) for a manual run."""
    window = triggered_window(context)
    if window is None:
        return {"interval_start": "", "interval_end": ""}
    return {"interval_start": window[0].isoformat(), "interval_end": window[1].isoformat()}


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
                # the incremental models process what the triggering extractions read
                "vars": INTERVAL_VARS,
            },
        )

        @task
        def data_interval(**context) -> dict[str, str]:
            """What this run's incremental models process: the union of the windows the
            triggering extraction runs read (a backfill's runs pass theirs); a manual run
            processes everything."""
            return dbt_interval_vars(context)

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

            start, end = triggering_interval(context)
            return gx_quality_gate(warehouse_dsn(), context["run_id"], start, end)

        @task(outlets=[gated_marts_asset()], trigger_rule="all_done")
        def quality_gate(**context) -> str:
            """Emits the gated-marts asset once dbt built everything and the gate's results
            are recorded (a failing GX suite is a recorded result, not a reason to stop the
            other scopes). Publishing then reads dq.scope_status per scope.

            It fails (no retry, no asset event) when dbt or the gate's dbt checks did not
            complete: it is the DAG's only leaf, so its state is what the run's state shows."""
            from airflow.sdk.exceptions import AirflowFailException

            if context["ti"].xcom_pull(task_ids="dbt_gate_checks") is None:
                raise AirflowFailException("dbt or its gate checks did not complete (see the red "
                                           "upstream task): nothing is published from this run")
            return f"marts gated by {context['run_id']}"

        dbt_checks = dbt_gate_checks()
        gx_checks = gx_gate_checks()
        data_interval() >> dbt >> [dbt_checks, gx_checks]
        [dbt_checks, gx_checks] >> quality_gate()

    return transform()
