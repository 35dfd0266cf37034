"""
### publish_reporting — gated marts to the `reporting` schema

Scheduled on the *gated marts* asset that `transform_dbt`'s quality gate emits only when every
dbt model and test passed. Each reporting table is replaced in one transaction from its mart,
so BI tools reading `reporting.*` never see unchecked or half-written data.
"""

from airflow.sdk import dag, task
from factory_platform.dag_factory import START_DATE, default_args
from factory_platform.transform import gated_marts_asset


@dag(
    dag_id="publish_reporting",
    schedule=[gated_marts_asset()],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["publish", "reporting"],
    doc_md=__doc__,
)
def publish_reporting():
    @task
    def publish_gated_marts(**context) -> dict[str, int]:
        from factory_platform.publish import publish_reporting as publish
        from factory_platform.warehouse import warehouse_dsn

        return publish(warehouse_dsn(), context["run_id"])

    publish_gated_marts()


publish_reporting()
