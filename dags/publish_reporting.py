"""
### publish_reporting — gated marts to the `reporting` schema

Scheduled on the *gated marts* asset that `transform_dbt`'s quality gate emits once every dbt
model built and the gate's checks are recorded. Each reporting table is replaced in one
transaction from its mart; the `reporting.rpt_*` views show gated scopes only (blocked
site-days left out, flagged ones marked), readable by the role `reporting_reader`. Each run
renders a static HTML report with charts: OEE by line, downtime Pareto, first-pass yield and
scrap, inventory accuracy, energy per good unit, data quality per source.
"""

from airflow.sdk import dag, task
from factory_platform.dag_factory import publishing_dag_args


@dag(
    dag_id="publish_reporting",
    tags=["publish", "reporting"],
    doc_md=__doc__,
    **publishing_dag_args(),
)
def publish_reporting():
    @task
    def publish_gated_marts(**context) -> dict[str, int]:
        from factory_platform.publish import publish_reporting as publish
        from factory_platform.warehouse import warehouse_dsn

        return publish(warehouse_dsn(), context["run_id"])

    @task
    def grant_reporting_reader() -> None:
        """The read-only role BI tools use: the reporting schema, nothing else."""
        import psycopg
        from factory_platform.report import ensure_reporting_reader
        from factory_platform.warehouse import warehouse_dsn

        with psycopg.connect(warehouse_dsn()) as conn:
            ensure_reporting_reader(conn)

    @task
    def render_html_report(**context) -> str:
        """The run's static HTML report with charts (var/run/reports/<run>/index.html)."""
        import os
        from pathlib import Path

        from factory_platform.report.render import render_report
        from factory_platform.warehouse import warehouse_dsn

        out_dir = Path(os.environ.get("SFDP_REPORTS_DIR", "var/reports"))
        return str(render_report(warehouse_dsn(), out_dir, context["run_id"]))

    publish_gated_marts() >> grant_reporting_reader() >> render_html_report()


publish_reporting()
