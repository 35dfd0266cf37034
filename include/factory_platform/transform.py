"""The dbt DAG (Cosmos) and the quality gate that decides whether the marts may be published."""

from __future__ import annotations

from factory_platform.assets import warehouse_asset_uri
from factory_platform.dag_factory import START_DATE, default_args
from factory_platform.dbt_project import DBT_PROJECT_DIR, MANIFEST_PATH
from factory_platform.sources import all_sources

GATED_MARTS_URI = "gate://warehouse/marts"


def gated_marts_asset():
    """Updated only when every dbt model and test of a transform run passed."""
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
        dbt = DbtTaskGroup(
            group_id="dbt",
            project_config=ProjectConfig(
                dbt_project_path=DBT_PROJECT_DIR, manifest_path=MANIFEST_PATH,
                project_name="factory_platform",
            ),
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
                emit_datasets=False,
            ),
            operator_args={"install_deps": False},
        )

        @task(outlets=[gated_marts_asset()])
        def quality_gate(**context) -> str:
            """Reached only when every dbt model and test upstream succeeded."""
            return f"marts gated by {context['run_id']}"

        dbt >> quality_gate()

    return transform()
