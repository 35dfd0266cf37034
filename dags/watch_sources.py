"""
### watch_sources — noticing a source that goes quiet

Every 10 minutes, as the transformer (connection `warehouse`):

* `check_source_freshness` runs `dbt source freshness` once over every raw table whose dbt
  source declares `loaded_at_field` and thresholds, and stores each table's status (pass, warn,
  error), newest load, age and thresholds in `dq.source_freshness`. A stale table is a result,
  not a failure: the task fails only when dbt could not measure.
* `check_not_seen` opens a not-seen incident (`dq.source_not_seen`) for a system whose entities
  loaded no batch (`ops.load_audit`) for longer than twice its schedule plus a grace (MES, QMS:
  40 min; hourly systems: 2 h 10 min; PLM: 48 h 10 min), alerts it once, and clears it — with
  one more alert — when batches load again.

Both show in `reporting.rpt_source_health` and at the top of the HTML report. Alerts go to the
`alert_webhook` connection (`include/factory_platform/alerts.py`). The logic:
`include/factory_platform/source_watch.py`.
"""

from datetime import timedelta

from airflow.sdk import dag, task
from factory_platform.dag_factory import START_DATE, default_args


@dag(
    dag_id="watch_sources",
    schedule="*/10 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**default_args(execution_timeout=timedelta(minutes=9)), "retries": 1},
    tags=["watch", "ops", "sources"],
    doc_md=__doc__,
)
def watch_sources():
    @task
    def check_source_freshness(**context) -> dict:
        """`dbt source freshness` → dq.source_freshness (one row per raw table)."""
        from collections import Counter

        from factory_platform.source_watch import run_source_freshness
        from factory_platform.warehouse import warehouse_dsn

        results = run_source_freshness(warehouse_dsn(), context["run_id"])
        return dict(Counter(r.status for r in results))

    @task
    def check_not_seen(**context) -> dict:
        """Open, clear and alert the systems' not-seen incidents (dq.source_not_seen)."""
        from factory_platform.source_watch import check_not_seen as check
        from factory_platform.warehouse import warehouse_dsn

        changes = check(warehouse_dsn(), context["run_id"])
        return {"opened": changes.opened, "cleared": changes.cleared,
                "alerts_sent": changes.alerts_sent}

    check_source_freshness()
    check_not_seen()


watch_sources()
