"""Shared steps for tests that need the warehouse built from the simulated plant: extract
systems through the real clients (no Airflow), run dbt through its CLI, reset the platform's
schemas. Imported by test modules as `_pipeline` (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import psycopg
from factory_platform.sources import all_sources
from psycopg import sql

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_DIR = str(PROJECT_ROOT / "dbt_project")
ALL_SYSTEMS = tuple(all_sources())  # every system of the source registry


def day_windows(plant, days_before: int = 30, days_after: int = 2
                ) -> list[tuple[datetime, datetime]]:
    """Daily windows from `days_before` days before the first shift (ERP orders are created
    ahead of production) to `days_after` days after the last (WMS cycle counts arrive ~28 h
    late)."""
    start = plant.start.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=days_before)
    end = plant.end + timedelta(days=days_after)
    days = []
    while start < end:
        days.append((start, start + timedelta(days=1)))
        start += timedelta(days=1)
    return days


def extract_all(system: str, windows, dsn: str) -> None:
    """Every entity of a system; a snapshot entity (master data) once, the others per window."""
    from factory_platform.extract.run import extract_windows

    extract_windows(system, windows, dsn)


def reset_platform_schemas(dsn: str) -> None:
    """Drop everything the pipeline builds (not the truth), as on a fresh deployment."""
    from factory_platform.bootstrap import bootstrap_warehouse
    from factory_platform.warehouse import schemas

    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema in (*schemas(), "dq_failures"):
            conn.execute(f"drop schema if exists {schema} cascade")
    bootstrap_warehouse(dsn)


# The whole plant extracted and built once, shared by the modules that only read the layers
# (tests/marts/*) and the one that goes on from it (tests/publish). A comment on the marts
# schema names the test session that built it; anything that resets or changes the layers
# drops the schema (reset_platform_schemas) or the mark (changing_the_build), and the next
# module rebuilds.
_SESSION_MARK = f"built by test session {os.getpid()}-{datetime.now().timestamp()}"


def build_whole_plant(plant, dsn: str) -> str:
    """Every system extracted over the range of `day_windows(plant)` in one window (as a reload
    does: the same raw rows as 47 daily windows, in a quarter of the time — that windows and
    re-runs change nothing is the extract modules' subject), then `dbt build --full-refresh`
    of every model, seed and snapshot with the unit tests. Not the data tests: tests/e2e runs
    them on the same whole plant (transform_dbt's build), here they would only repeat ~25 s;
    nor the gate's per-scope tests, which record results (tests/publish).
    Re-used when this session already built it and nothing has changed it since."""
    with psycopg.connect(dsn) as conn:
        mark = conn.execute("select obj_description(oid, 'pg_namespace') from pg_namespace "
                            "where nspname = 'marts'").fetchone()
    if mark and mark[0] == _SESSION_MARK:
        return dsn
    reset_platform_schemas(dsn)
    windows = day_windows(plant)
    for system in ALL_SYSTEMS:
        extract_all(system, [(windows[0][0], windows[-1][1])], dsn)
    dbt("build", "--full-refresh", "--exclude", "tag:gate", "test_type:data", "--threads", "4")
    _set_build_mark(dsn, _SESSION_MARK)
    return dsn


def _set_build_mark(dsn: str, mark: str | None) -> None:
    statement = sql.SQL("comment on schema marts is {}").format(
        sql.SQL("null") if mark is None else sql.Literal(mark))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


@contextmanager
def changing_the_build(dsn: str, restored: bool):
    """A block that changes the shared build: later modules rebuild unless `restored` (the
    block leaves every table as the full build had it, and checked that it did)."""
    _set_build_mark(dsn, None)
    yield
    if restored:
        _set_build_mark(dsn, _SESSION_MARK)


def empty_erp_inbox(erp_dsn: str) -> None:
    """The simulated ERP as before any posting: nothing received on its inbound interface
    (another test module may have published to the same ERP database)."""
    with psycopg.connect(erp_dsn, autocommit=True) as conn:
        conn.execute("truncate erp.inbound_postings restart identity")
        conn.execute("alter sequence erp.document_number_seq restart")


def dbt(command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`dbt <command> <args>` on the project, against the test warehouse (PG* from conftest),
    run in this process through dbt's Python API (`dbtRunner`): the same CLI arguments and
    project, without the ~3 s a dbt process spends importing itself (the suite calls dbt ~40
    times). Returns what the CLI would: returncode, and as stdout dbt's log lines (the listed
    nodes for `ls`). The platform itself runs dbt as a process (dbt_project.run_dbt); this is
    the tests' own short cut to set the warehouse up."""
    result, lines = _invoke_dbt([command, "--project-dir", DBT_DIR, "--profiles-dir", DBT_DIR,
                                 *args])
    if isinstance(result.result, list):  # ls: the nodes, one per line, as the CLI prints them
        listed = [str(node) for node in result.result]
        lines = [*listed, *(line for line in lines if line not in set(listed))]
    if result.exception is not None:
        lines.append(f"{type(result.exception).__name__}: {result.exception}")
    completed = subprocess.CompletedProcess(
        ["dbt", command, *args], 0 if result.success else 1, "\n".join(lines), "")
    if check:
        assert result.success, f"dbt {command} failed:\n{completed.stdout[-8000:]}"
    return completed


def _invoke_dbt(args: list[str]):
    """One dbtRunner invocation; its log lines (info and above) collected. dbt loads the
    nearest .env into os.environ (on import and per invocation, without overriding): what it
    adds is taken out again, so no `make run` setting leaks into the tests' environment."""
    before = dict(os.environ)
    lines: list[str] = []

    def collect(event) -> None:
        if event.info.level in ("info", "warn", "error") and event.info.msg:
            lines.append(event.info.msg)

    try:
        from dbt.cli.main import dbtRunner

        os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
        result = dbtRunner(callbacks=[collect]).invoke(args)
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        os.environ.update(before)
    return result, lines


def dbt_build_selected(select: list[str], *args: str) -> subprocess.CompletedProcess:
    """`dbt build` of the selected models and the tests on them (cautious indirect selection)."""
    return dbt("build", "--select", *select, "--indirect-selection", "cautious",
               "--threads", "4", *args)


def build_in_three_chunks(dsn: str, select: list[str], windows, snapshot) -> tuple[dict, dict]:
    """The incremental path against a full refresh: from an empty state (the incremental
    tables of `select` truncated), three incremental builds over consecutive thirds of the
    windows' range must give exactly the tables `snapshot(dsn)` returned before. Returns the
    full build's and the empty state's snapshots for the caller's own checks."""
    full = snapshot(dsn)
    start, end = windows[0][0], windows[-1][1]
    third = (end - start) / 3
    bounds = [start, start + third, start + 2 * third, end]
    with changing_the_build(dsn, restored=True):
        started = time.monotonic()
        # every incremental table emptied (a full refresh builds them complete whatever vars
        # are set, so truncating is the way to an empty incremental state)
        tables = [sql.Identifier(*table.split(".")) for table in incremental_tables(select)]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("truncate {}").format(sql.SQL(", ").join(tables)))
        emptied = snapshot(dsn)
        for chunk_start, chunk_end in pairwise(bounds):  # models only: the full build tested
            with transform_interval(dsn, chunk_start, chunk_end):
                dbt_build_selected(select, "--resource-type", "model")
        print(f"\nempty + 3 incremental chunks: {time.monotonic() - started:.1f} s")
        chunked = snapshot(dsn)
        differing = {t: (len(full[t]), len(chunked[t])) for t in full if full[t] != chunked[t]}
        assert differing == {}, f"tables differ (full rows, chunked rows): {differing}"
    return full, emptied


def incremental_tables(select: list[str]) -> list[str]:
    """`schema.table` of the incremental models among `select` (`dbt ls`, ~3 s)."""
    listed = dbt("ls", "--quiet", "--resource-type", "model", "--output", "json",
                 "--output-keys", "schema", "alias",
                 "--select", *(f"{item},config.materialized:incremental" for item in select))
    nodes = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]
    return [f"{node['schema']}.{node['alias']}" for node in nodes]


@contextmanager
def transform_interval(dsn: str, start: datetime, end: datetime):
    """dbt builds in the block process [start, end) incrementally, handed over as transform_dbt
    does it: a row of ops.transform_run named by SFDP_TRANSFORM_RUN_ID (not --vars, whose every
    new value makes dbt parse the whole project again, ~5 s a build)."""
    from factory_platform.transform_window import RUN_ID_ENV

    run_id = f"test-interval-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("insert into ops.transform_run (run_id, audit_upto, interval_start, "
                     "interval_end, batches) values (%s, now(), %s, %s, 0)", (run_id, start, end))
    os.environ[RUN_ID_ENV] = run_id
    try:
        yield run_id
    finally:
        del os.environ[RUN_ID_ENV]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("delete from ops.transform_run where run_id = %s", (run_id,))


def interval_vars(start: datetime, end: datetime) -> str:
    """dbt --vars for an incremental build of [start, end)."""
    return json.dumps({"interval_start": start.isoformat(), "interval_end": end.isoformat()})


def rows(dsn: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()
