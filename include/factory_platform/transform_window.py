"""What a transform_dbt run processes: the load batches finished since the last run that
succeeded — as one interval for the incremental models, and as the dbt selection of the models
downstream of the sources those batches changed.

Airflow hands a run the asset events that triggered it only for assets its DAG schedules on as
full `Asset`s; transform_dbt schedules on references by URI (parse time, see
`transform.raw_asset_refs`), so its runs get none. The load audit is the platform's own record of
every batch — scheduled, reloaded or backfilled — with its interval and the window it read
(the interval widened by the source's lookback). A run takes the batches finished since the
audit mark of the last run that succeeded (minus an overlap: a batch's `finished_at` is its
transaction's start, so one committed just after a run looked can carry an earlier time) that no
run which succeeded took already (`ops.transform_run.batch_ids`: without it every batch stayed in
the selection and the interval of every run for the ten minutes of the overlap — an hourly ERP
batch made ten minutes of runs rebuild everything downstream of the ERP, over its hours of
lookback), and `quality_gate` marks the run succeeded. A failed run marks nothing: the next one
takes its batches again. A manual run, and the first run of a warehouse, process everything.

The interval is recorded in `ops.transform_run`; the dbt macros read it from there at execution
time (macros/production/interval.sql), so the dbt process gets no per-run `--vars` and dbt's
partial parsing holds. Which models a run builds (`run_selection`): those downstream of each
(system, entity) a batch of the run changed, plus the marts over the platform's own bookkeeping
(load audit, gate results, ERP outbox), which change with every run.
"""

from __future__ import annotations

from datetime import timedelta

OVERLAP = timedelta(minutes=10)
EVERYTHING = {"interval_start": "", "interval_end": ""}
# dbt's selection of every node (models, seeds, snapshots, tests, unit tests): its default
SELECT_EVERYTHING = "fqn:*"
# the environment variable naming the run to dbt (the interval macros read its interval)
RUN_ID_ENV = "SFDP_TRANSFORM_RUN_ID"


def open_run(dsn: str, run_id: str, everything: bool = False) -> dict[str, str]:
    """Record the run's interval and the batches it takes in ops.transform_run and return the
    interval as dbt vars (UTC ISO strings; empty strings: everything). Re-running the task (a
    retry) records it afresh."""
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(dsn) as conn:
        upto = conn.execute("select now()").fetchone()[0]
        last = _last_mark(conn)
        since = (last if last is not None else upto) - OVERLAP
        # the batches finished since the last mark (minus the overlap) that no run which
        # succeeded took; one statement, so the interval and the ids agree
        taken = conn.execute(
            "select batch_id, window_start, interval_end from ops.load_audit a "
            "where finished_at > %(since)s and finished_at <= %(upto)s and not exists ("
            "  select 1 from ops.transform_run r where r.succeeded_at is not null "
            "  and r.audit_upto > %(since)s and r.batch_ids ? a.batch_id)",
            {"since": since, "upto": upto}).fetchall()
        start = end = None
        if not everything and last is not None:
            start = min((w for _, w, _ in taken), default=upto)
            end = max((e for _, _, e in taken), default=upto)  # nothing taken: empty
        conn.execute(
            "insert into ops.transform_run (run_id, audit_upto, interval_start, interval_end, "
            "batches, batch_ids) values (%s, %s, %s, %s, %s, %s) on conflict (run_id) do "
            "update set audit_upto = excluded.audit_upto, interval_start = "
            "excluded.interval_start, interval_end = excluded.interval_end, batches = "
            "excluded.batches, batch_ids = excluded.batch_ids, started_at = now(), "
            "succeeded_at = null",
            (run_id, upto, start, end, len(taken), Jsonb([b for b, _, _ in taken])))
    if start is None:
        return dict(EVERYTHING)
    return {"interval_start": start.isoformat(), "interval_end": end.isoformat()}


def _last_mark(conn):
    return conn.execute("select max(audit_upto) from ops.transform_run "
                        "where succeeded_at is not null").fetchone()[0]


def changed_entities(dsn: str, run_id: str) -> list[tuple[str, str]] | None:
    """The (system, entity) pairs whose batches the run took (as `open_run` recorded them)
    changed raw: loaded, with rows written or replaced. None when the run processes everything.
    A batch that loaded nothing (an empty window, a rejected or refused answer) changes no
    model; it still widens the interval, as before."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("select interval_start, batch_ids from ops.transform_run "
                           "where run_id = %s", (run_id,)).fetchone()
        if row is None:
            raise LookupError(f"transform run {run_id} was not opened (open_run)")
        start, batch_ids = row
        if start is None:
            return None
        return [tuple(pair) for pair in conn.execute(
            "select distinct system, entity from ops.load_audit "
            "where batch_id = any(%s) and status = 'loaded' "
            "and (rows_loaded > 0 or rows_replaced > 0) order by 1, 2", (batch_ids or [],))]


def run_selection(changed: list[tuple[str, str]] | None, manifest: dict) -> str:
    """The dbt `--select` of a run (space-separated, as dbt takes it): every node when
    `changed` is None; otherwise `source:<system>.<table>+` for each changed entity's dbt source
    table (the entity's, and its auxiliary `<entity>__*` tables, e.g. a historian's file list),
    and `<model>+` for each table model over the platform's bookkeeping (sources outside the
    raw_* schemas: ops, dq), which every run's loads, gate and postings change. Entities no dbt
    source reads select nothing."""
    if changed is None:
        return SELECT_EVERYTHING
    raw_tables = {(s["source_name"], s["name"]) for s in manifest["sources"].values()
                  if s["schema"].startswith("raw_")}
    platform_sources = {uid for uid, s in manifest["sources"].items()
                        if not s["schema"].startswith("raw_")}
    selected = sorted(
        f"source:{source}.{table}+" for source, table in raw_tables
        for system, entity in changed
        if source == system and (table == entity or table.startswith(f"{entity}__")))
    bookkeeping = sorted(
        f"{node['name']}+" for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        and node["config"].get("materialized") in ("table", "incremental")
        and platform_sources & set(node["depends_on"]["nodes"]))
    return " ".join(selected + bookkeeping)


def close_run(dsn: str, run_id: str) -> None:
    """The run built every model and recorded its gate: later runs start from its mark."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("update ops.transform_run set succeeded_at = now() where run_id = %s",
                     (run_id,))
