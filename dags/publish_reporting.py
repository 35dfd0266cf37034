"""
### publish_reporting — the gated `reporting` views as the run's HTML report

Scheduled on the *gated marts* asset that `transform_dbt`'s quality gate emits once every dbt
model built and the gate's checks are recorded. The `reporting.rpt_*` views (dbt) show the marts
for gated scopes only — blocked and undecided site-days left out, flagged ones marked — and are
all that the role `reporting_reader` (BI tools) may read; `reporting` holds no copy of a mart.
Each run renders a static HTML report with charts from those views, as the reporting reader
(connection `warehouse_report`): OEE by line, downtime Pareto, first-pass yield and scrap,
inventory accuracy, energy per good unit, data quality per source.
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
    def render_html_report(**context) -> str:
        """The run's static HTML report with charts (var/run/reports/<run>/index.html), read
        from the reporting views as reporting_reader."""
        import os
        from pathlib import Path

        from factory_platform.report.render import render_report
        from factory_platform.warehouse import warehouse_dsn

        out_dir = Path(os.environ.get("SFDP_REPORTS_DIR", "var/reports"))
        return str(render_report(warehouse_dsn(), out_dir, context["run_id"]))

    render_html_report()


publish_reporting()
