"""Builds the Airflow DAGs from the source registry: `dags/extract_sources.py` makes every
`extract_<system>` DAG with `build_extract_dags()`, so a new system needs no DAG file.

A source that declares a `change_feed` is scheduled on its cron *or* its change-feed asset
(`AssetOrTimeSchedule`; the asset's watcher is a trigger of `change_triggers`): a change starts
an asset-triggered run at once, the cron stays as the safety net. Such a run has no data
interval; `run_window` gives it a short window ending at its `run_after` (`event_window`).

Nothing here touches a database or the network at import or build time: tasks do their work
when they run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factory_platform.assets import gated_marts_asset, warehouse_asset
from factory_platform.sources import all_sources, get_source

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


TASK_TIMEOUT = timedelta(hours=1)

# Who gets a free executor slot first when tasks queue (Airflow's priority_weight, absolute, so
# a DAG's shape does not change it). First the way from a shop-floor event to the ERP:
# transform_dbt's interval, dbt build and gate, publish_erp's posting. Last the extractions,
# whose change-triggered runs keep coming while a source changes. (transform_dbt's per-model
# tasks take no slot: they run in the triggerer, transform_watch.py.)
# Seen in the latency bench's change-triggered load on 2 cores (4 slots): with the default
# weights a task on the way to the ERP waited 11-23 s for a slot, each time.
PRIORITY_TO_ERP = 100
PRIORITY_EXTRACT = 10


def priority(weight: int) -> dict:
    """A task's `priority_weight` and `weight_rule` arguments for `weight` (absolute)."""
    return {"priority_weight": weight, "weight_rule": "absolute"}


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

    from factory_platform.source_watch import extraction_deadline

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
        schedule=extract_schedule(source),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=2,
        default_args=default_args(source.owner, source.task_timeout),
        tags=["extract", system, "raw"],
        doc_md=doc_md,
        params=reload_params,
        # a run not finished its cadence + 10 min after it was queued is alerted (triggerer)
        deadline=extraction_deadline(source),
    )
    def extract():
        for entity in source.entities:
            asset = warehouse_asset(f"raw_{system}", entity.name)

            # Every extraction task waits for a slot of its system's pool (factory_platform.
            # pools): the plant sees at most `max_connections` of our sessions, in any run.
            @task(task_id=f"load_{entity.name}", outlets=[asset], doc_md=entity.description,
                  pool=source.pool, **priority(PRIORITY_EXTRACT))
            def load(entity_name: str = entity.name, asset=asset, **context) -> dict:
                from factory_platform.extract.run import (
                    extract_interval,
                    extract_scheduled,
                    release_plant_connections,
                )

                start, end = run_window(context, source.schedule_cron)
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


def extract_schedule(source):
    """The source's cron as data intervals (a plain cron string gives zero-width intervals in
    Airflow 3) — or that cron *or* its change-feed asset, when the source declares one."""
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    from factory_platform.change_triggers import change_feed_asset

    cron = CronDataIntervalTimetable(source.schedule_cron, timezone="UTC")
    changes = change_feed_asset(source)
    if changes is None:
        return cron
    return AssetOrTimeSchedule(timetable=cron, assets=changes)


def run_window(context, schedule_cron: str) -> tuple[datetime, datetime]:
    """The run's data interval, or the reload window a manual run asked for in its params, or
    — for a run without a data interval (asset-triggered by a change signal, or triggered by
    hand without a logical date) — the short window ending at its `run_after`."""
    params = context.get("params") or {}
    if reload_requested(context):
        start = datetime.fromisoformat(str(params["reload_start"]))
        end = datetime.fromisoformat(str(params["reload_end"]))
        if start.tzinfo is None or end.tzinfo is None or start >= end:
            raise ValueError(f"reload window must be UTC timestamps with start < end: {params}")
        return start, end
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        return start, end
    return event_window(schedule_cron, context["dag_run"].run_after)


def event_window(schedule_cron: str, ends_at: datetime) -> tuple[datetime, datetime]:
    """[the start of the schedule interval that holds `ends_at`, `ends_at`): what has passed of
    the current interval. The run loads it like a scheduled run — first what is missing since
    the high-water mark, with the source's lookback — and its end is the run's own (a retry
    reloads the same batch), so the next scheduled run of the interval overlaps it and
    replaces its rows, never duplicating them."""
    from croniter import croniter

    ends_at = ends_at.astimezone(UTC)
    return croniter(schedule_cron, ends_at).get_prev(datetime), ends_at
