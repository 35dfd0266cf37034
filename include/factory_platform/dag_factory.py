"""Builds the Airflow DAGs from the source registry: `dags/extract_sources.py` makes every
`extract_<system>` DAG with `build_extract_dags()`, so a new system needs no DAG file.

Nothing here touches a database or the network at import or build time: tasks do their work
when they run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factory_platform.assets import gated_marts_asset, warehouse_asset
from factory_platform.sources import all_sources, get_source

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


TASK_TIMEOUT = timedelta(hours=1)


def default_args(owner: str = "data-platform",
                 execution_timeout: timedelta = TASK_TIMEOUT) -> dict:
    """Every task: retries with backoff, a failure alert, and a time limit — a task that hangs
    (a stalled source, a lock) is stopped and retried instead of holding its slot for ever."""
    from factory_platform.alerts import WebhookNotifier

    return {"owner": owner, "retries": 2, "retry_delay": timedelta(seconds=30),
            "retry_exponential_backoff": True, "on_failure_callback": WebhookNotifier(),
            "execution_timeout": execution_timeout}


def publishing_dag_args() -> dict:
    """What every publishing DAG shares: triggered by the gated-marts asset that
    transform_dbt's quality gate emits, one run at a time, no catch-up."""
    return {"schedule": [gated_marts_asset()], "start_date": START_DATE, "catchup": False,
            "max_active_runs": 1, "default_args": default_args()}


def build_extract_dags() -> dict[str, object]:
    """`extract_<system>` for every system of the source registry, by DAG id."""
    return {source.dag_id: build_extract_dag(system)
            for system, source in all_sources().items()}


def build_extract_dag(system: str, doc_md: str | None = None):
    """`extract_<system>`: one task per entity, each an interval load with its raw table as
    outlet; documented by `doc_md`, else by its registry module's docstring."""
    from airflow.sdk import Param, dag, task
    from airflow.timetables.interval import CronDataIntervalTimetable

    source = get_source(system)
    doc_md = doc_md or source.doc_md or None
    reload_params = {
        "reload_start": Param(None, type=["null", "string"], format="date-time",
                              title="Reload window start (UTC)",
                              description="Manual runs only: load this window instead of the "
                                          "run's data interval (leave empty otherwise)."),
        "reload_end": Param(None, type=["null", "string"], format="date-time",
                            title="Reload window end (UTC, exclusive)"),
    }

    @dag(
        dag_id=source.dag_id,
        schedule=CronDataIntervalTimetable(source.schedule_cron, timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=2,
        default_args=default_args(source.owner, source.task_timeout),
        tags=["extract", system, "raw"],
        doc_md=doc_md,
        params=reload_params,
    )
    def extract():
        for entity in source.entities:
            asset = warehouse_asset(f"raw_{system}", entity.name)

            # Every extraction task waits for a slot of its system's pool (factory_platform.
            # pools): the plant sees at most `max_connections` of our sessions, in any run.
            @task(task_id=f"load_{entity.name}", outlets=[asset], doc_md=entity.description,
                  pool=source.pool)
            def load(entity_name: str = entity.name, asset=asset, **context) -> dict:
                from factory_platform.extract.run import (
                    extract_interval,
                    extract_scheduled,
                    release_plant_connections,
                )

                start, end = run_window(context)
                # A backfill or a reload loads exactly its window; any other run first loads
                # what is missing since the entity's high-water mark (extract.run).
                exact = reload_requested(context) or "backfill" in str(
                    context["dag_run"].run_type).lower()
                extract = extract_interval if exact else extract_scheduled
                try:
                    summary = extract(system, entity_name, start, end, run_id=context["run_id"])
                finally:  # before the task reports done and its pool slot is given to another
                    release_plant_connections()
                context["outlet_events"][asset].extra = {
                    "interval_start": start.isoformat(), "interval_end": end.isoformat(),
                    "rows_loaded": summary["rows_loaded"],
                }
                return summary

            load()

    return extract()


def reload_requested(context) -> bool:
    params = context.get("params") or {}
    return bool(params.get("reload_start") and params.get("reload_end"))


def run_window(context) -> tuple[datetime, datetime]:
    """The run's data interval, or the reload window a manual run asked for in its params."""
    params = context.get("params") or {}
    if reload_requested(context):
        start = datetime.fromisoformat(str(params["reload_start"]))
        end = datetime.fromisoformat(str(params["reload_end"]))
        if start.tzinfo is None or end.tzinfo is None or start >= end:
            raise ValueError(f"reload window must be UTC timestamps with start < end: {params}")
        return start, end
    return context["data_interval_start"], context["data_interval_end"]
