"""Shared set-up for the file-drop extraction tests: every interval of the test plant's world
extracted once for WMS, SCADA, EMS and PLM (through `extract_interval`, as the DAG tasks call
it), and helpers that read what the plant emitted (`<world>/drops/`)."""

from __future__ import annotations

import csv
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from factory_platform.extract.files import file_period
from factory_platform.extract.run import extract_interval
from factory_platform.sources import get_source

SYSTEMS = ("wms", "scada", "ems", "plm")


def emitted_files(plant, system: str, entity: str | None = None) -> list[Path]:
    """The files the plant delivered for a system (or one entity), per drops/index.csv."""
    with open(plant.world / "drops" / "index.csv", encoding="utf-8") as fh:
        names = [row["file_name"] for row in csv.DictReader(fh) if row["system"] == system]
    if entity:
        pattern = re.compile(get_source(system).entity(entity).endpoint)
        names = [n for n in names if pattern.fullmatch(n)]
    return [plant.world / "drops" / system / n for n in sorted(names)]


def world_intervals(plant, system: str) -> list[tuple[datetime, datetime]]:
    """Every data interval of the system's schedule that holds a delivered file."""
    from croniter import croniter

    source = get_source(system)
    periods = []
    for path in emitted_files(plant, system):
        for entity in source.entities:
            match = re.fullmatch(entity.endpoint, path.name)
            if match:
                periods.append(file_period(match))
    start = croniter(source.schedule_cron, min(periods) + timedelta(seconds=1)).get_prev(datetime)
    intervals = []
    while start <= max(periods):
        end = croniter(source.schedule_cron, start).get_next(datetime)
        intervals.append((start, end))
        start = end
    return intervals


def extract_all(plant, system: str, dsn: str, intervals=None, entities=None) -> None:
    """Run every interval (or the ones given) for each entity of the system, in order."""
    for entity in entities or [e.name for e in get_source(system).entities]:
        for start, end in intervals or world_intervals(plant, system):
            extract_interval(system, entity, start, end, dsn=dsn)


def reset(dsn: str, system: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"drop schema if exists raw_{system} cascade")
        conn.execute("delete from ops.quarantine where system = %s", (system,))
        conn.execute("delete from ops.load_audit where system = %s", (system,))
        conn.execute("delete from ops.schema_drift where system = %s", (system,))


def raw_fingerprint(dsn: str, system: str) -> dict[str, tuple]:
    """Per raw table: row count and an order-independent hash of every row's content
    (all columns but `_extracted_at`, the wall-clock load time)."""
    result = {}
    with psycopg.connect(dsn) as conn:
        for entity in get_source(system).entities:
            columns = [c for (c,) in conn.execute(
                "select column_name from information_schema.columns where table_schema = %s "
                "and table_name = %s order by ordinal_position", (f"raw_{system}", entity.name))
                if c != "_extracted_at"]
            row = ", ".join(f'"{c}"' for c in columns)
            result[entity.name] = conn.execute(
                f"select count(*), sum(('x' || left(md5(row({row})::text), 15))::bit(60)::bigint) "
                f"from raw_{system}.{entity.name}").fetchone()
    return result


def settle_inbox(inbox: Path, age_s: float = 3600) -> None:
    """Date the files in an inbox `age_s` back: the batch-mode plant drops every file at once
    when it starts, and a file is only taken once unchanged for its source's settle time."""
    settled = time.time() - age_s
    for path in inbox.glob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (settled, settled))


def extract_systems(plant, dsn: str, intervals_of=None) -> dict[str, float]:
    """Extract the systems side by side, one thread per entity (PLM's entities, which read the
    same files, in one). `intervals_of(system)` picks the intervals (default: the whole world).
    Returns the seconds each job took."""

    def run(system: str, entities: list[str]) -> float:
        started = time.perf_counter()
        extract_all(plant, system, dsn, intervals_of(system) if intervals_of else None, entities)
        return time.perf_counter() - started

    jobs = {}
    for system in SYSTEMS:
        names = [e.name for e in get_source(system).entities]
        if system == "plm":
            jobs[system] = names
        else:
            jobs.update({f"{system}.{name}": [name] for name in names})
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {job: pool.submit(run, job.split(".")[0], names) for job, names in jobs.items()}
        return {job: round(future.result(), 1) for job, future in futures.items()}


@pytest.fixture(scope="session")
def files_loaded(plant, warehouse_dsn):
    """Every interval of every file-drop system extracted once, from a clean slate; returns
    the raw tables' fingerprints right after."""
    from factory_platform.warehouse import ensure_warehouse_once

    # Once, before the threads start: ensure_warehouse's DDL, run while another thread loads,
    # can deadlock with that load (see the report on warehouse.OPS_DDL).
    ensure_warehouse_once(warehouse_dsn)
    for system in SYSTEMS:
        reset(warehouse_dsn, system)
        settle_inbox(plant.inbox / system)
    print("\nfirst extraction (s):", extract_systems(plant, warehouse_dsn))
    return {system: raw_fingerprint(warehouse_dsn, system) for system in SYSTEMS}


def scalar(dsn: str, sql: str, *params):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchone()[0]


def rows(dsn: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()
