"""What a transform_dbt run processes: the load batches finished since the last run that
succeeded, as one interval for the incremental models (dbt vars `interval_start/_end`).

Airflow hands a run the asset events that triggered it only for assets its DAG schedules on as
full `Asset`s; transform_dbt schedules on references by URI (parse time, see
`transform.raw_asset_refs`), so its runs get none. The load audit is the platform's own record of
every batch — scheduled, reloaded or backfilled — with its interval and the window it read
(the interval widened by the source's lookback). A run takes the batches finished since the
audit mark of the last run that succeeded (minus an overlap: a batch's `finished_at` is its
transaction's start, so one committed just after a run looked can carry an earlier time), and
`quality_gate` marks the run succeeded. A failed run marks nothing: the next one covers its
batches again. A manual run, and the first run of a warehouse, process everything.
"""

from __future__ import annotations

from datetime import timedelta

OVERLAP = timedelta(minutes=10)
EVERYTHING = {"interval_start": "", "interval_end": ""}


def open_run(dsn: str, run_id: str, everything: bool = False) -> dict[str, str]:
    """Record the run's interval in ops.transform_run and return it as dbt vars (UTC ISO
    strings; empty strings: everything). Re-running the task (a retry) records it afresh."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        upto = conn.execute("select now()").fetchone()[0]
        last = conn.execute("select max(audit_upto) from ops.transform_run "
                            "where succeeded_at is not null").fetchone()[0]
        start = end = None
        batches = 0
        if not everything and last is not None:
            start, end, batches = conn.execute(
                "select min(window_start), max(interval_end), count(*) from ops.load_audit "
                "where finished_at > %s and finished_at <= %s",
                (last - OVERLAP, upto)).fetchone()
            if batches == 0:  # nothing loaded since: an empty interval
                start = end = upto
        conn.execute(
            "insert into ops.transform_run (run_id, audit_upto, interval_start, interval_end, "
            "batches) values (%s, %s, %s, %s, %s) on conflict (run_id) do update set "
            "audit_upto = excluded.audit_upto, interval_start = excluded.interval_start, "
            "interval_end = excluded.interval_end, batches = excluded.batches, "
            "started_at = now(), succeeded_at = null",
            (run_id, upto, start, end, batches))
    if start is None:
        return dict(EVERYTHING)
    return {"interval_start": start.isoformat(), "interval_end": end.isoformat()}


def close_run(dsn: str, run_id: str) -> None:
    """The run built every model and recorded its gate: later runs start from its mark."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("update ops.transform_run set succeeded_at = now() where run_id = %s",
                     (run_id,))
