"""Helpers for the SQL extractor tests (ERP and EAM): interval loops, raw snapshots, and the
plant's emitted rows read from the world folder."""

from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

HISTORY = timedelta(days=30)  # one catch-up interval before the first shift: the orders placed
# days before production (sales orders, purchase orders) are part of the plant's history


def world_intervals(plant, tail: timedelta = timedelta(hours=2)) -> list[tuple[datetime, datetime]]:
    """The catch-up interval `[first shift - 30 days, first shift)`, then every hourly interval
    from the first shift start to the last shift end (+ `tail`, for rows ending exactly at it)."""
    intervals = [(plant.start - HISTORY, plant.start)]
    intervals += hourly(plant.start, plant.end + tail)
    return intervals


def hourly(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Consecutive one-hour intervals covering `[start, end)`."""
    out = []
    current = start
    while current < end:
        out.append((current, current + timedelta(hours=1)))
        current += timedelta(hours=1)
    return out


def extract_intervals(system: str, intervals, dsn: str, entities=None,
                      snapshot_every: int = 24) -> dict[str, list[dict]]:
    """`extract_interval` for every entity of one system over `intervals` (see
    `extract_systems`). Returns the load summaries per entity."""
    return extract_systems({system: intervals}, dsn, {system: entities} if entities else None,
                           snapshot_every)[system]


def extract_systems(intervals_by_system: dict, dsn: str, entities: dict | None = None,
                    snapshot_every: int = 24) -> dict[str, dict[str, list[dict]]]:
    """`extract_interval` for every entity of each system over its intervals: in order per
    entity, entities in parallel (as the DAGs' tasks run). Returns summaries per system and
    entity.

    Snapshot entities read the same whole table whatever the interval, so to keep the tests
    fast they run on every `snapshot_every`-th interval and the last one only."""
    from factory_platform.extract.run import extract_interval
    from factory_platform.sources import get_source
    from factory_platform.warehouse import ensure_warehouse_once

    # once, before the threads: concurrent ops DDL and loads can deadlock (see README_sql.md)
    ensure_warehouse_once(dsn)
    jobs = [(system, name) for system in intervals_by_system
            for name in ((entities or {}).get(system)
                         or [e.name for e in get_source(system).entities])]

    def run(job: tuple[str, str]) -> list[dict]:
        system, name = job
        chosen = list(intervals_by_system[system])
        if get_source(system).entity(name).option("mode") == "snapshot" and snapshot_every > 1:
            chosen = chosen[:-1][::snapshot_every] + chosen[-1:]
        return [extract_interval(system, name, start, end, run_id="test", dsn=dsn)
                for start, end in chosen]

    out: dict[str, dict[str, list[dict]]] = {system: {} for system in intervals_by_system}
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for (system, name), summaries in zip(jobs, pool.map(run, jobs)):
            out[system][name] = summaries
    return out


@dataclass
class Loaded:
    """The plant's whole history extracted once per test session (ERP and EAM together)."""

    intervals: list
    summaries: dict  # entity → load summaries
    seconds: float  # wall time of the combined ERP + EAM load


_WORLD_LOADS: dict[str, Loaded] = {}


def world_loaded(plant, dsn: str, system: str) -> Loaded:
    """Reset raw_erp/raw_eam and extract every interval of the world for both systems (once
    per session, both in one pool: the tests share the cost); the `system`'s part."""
    if not _WORLD_LOADS:
        for each in SQL_SYSTEMS:
            reset_system(dsn, each)
        intervals = world_intervals(plant)
        started = time.monotonic()
        summaries = extract_systems({each: intervals for each in SQL_SYSTEMS}, dsn)
        seconds = time.monotonic() - started
        for each in SQL_SYSTEMS:
            _WORLD_LOADS[each] = Loaded(intervals, summaries[each], seconds)
    return _WORLD_LOADS[system]


SQL_SYSTEMS = ("erp", "eam")


def reset_system(dsn: str, system: str) -> None:
    """Drop raw_<system> and the system's audit, quarantine and drift rows (a fresh start)."""
    from factory_platform.warehouse import ensure_warehouse

    ensure_warehouse(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"drop schema if exists raw_{system} cascade")
        conn.execute(f"create schema raw_{system}")
        for table in ("load_audit", "quarantine", "schema_drift"):
            conn.execute(f"delete from ops.{table} where system = %s", (system,))


def raw_contents(dsn: str, system: str, exclude=("_extracted_at",)) -> dict[str, list[tuple]]:
    """Every raw_<system> table's rows (all columns but `exclude`), sorted, as text."""
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = %s "
            "order by 1", (f"raw_{system}",))]
        out = {}
        for table in tables:
            columns = [r[0] for r in conn.execute(
                "select column_name from information_schema.columns where table_schema = %s "
                "and table_name = %s order by ordinal_position", (f"raw_{system}", table))
                if r[0] not in exclude]
            select = ", ".join(f'"{c}"::text' for c in columns)
            out[table] = conn.execute(
                f"select {select} from raw_{system}.{table} order by 1, 2, 3").fetchall()
        return out


def first_differences(before: dict, after: dict, limit: int = 3) -> dict[str, Any]:
    """Per table: counts and the first rows only in one of the two snapshots."""
    problems = {}
    for table in sorted(set(before) | set(after)):
        old, new = set(before.get(table, [])), set(after.get(table, []))
        if old != new or len(before.get(table, [])) != len(after.get(table, [])):
            problems[table] = {"rows_before": len(before.get(table, [])),
                               "rows_after": len(after.get(table, [])),
                               "only_before": sorted(old - new)[:limit],
                               "only_after": sorted(new - old)[:limit]}
    return problems


def world_rows(world: Path, system: str, table: str) -> list[dict[str, str]]:
    """The rows the plant emitted for one table (`<world>/<system>/<table>.csv`)."""
    path = world / system / f"{table}.csv"
    if not path.exists():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def typed(fields, row: dict[str, str]) -> tuple:
    """A CSV row's declared fields as Python values (empty = NULL), for comparing with raw."""
    from factory_platform.fields import PARSERS

    return tuple(None if row.get(f.name, "") == "" else PARSERS[f.type](row[f.name])
                 for f in fields)


def raw_latest(dsn: str, system: str, entity, fields) -> list[tuple]:
    """The latest row per natural key (by cursor, where the table is a change feed): the
    values of `fields`, in order."""
    names = ", ".join(f'"{f.name}"' for f in fields)
    key = ", ".join(f'"{k}"' for k in entity.natural_key)
    order = f'{key}, "{entity.cursor}" desc' if entity.cursor else key
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"select distinct on ({key}) {names} from raw_{system}.{entity.name} "
                            f"order by {order}").fetchall()


def audit_problems(dsn: str, system: str) -> list[tuple]:
    """Batches whose counts do not add up: read = loaded + quarantined + duplicates."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select batch_id, rows_read, rows_loaded, rows_quarantined, duplicates_skipped "
            "from ops.load_audit where system = %s "
            "and rows_read <> rows_loaded + rows_quarantined + duplicates_skipped",
            (system,)).fetchall()


def scalar(dsn: str, query: str, params: tuple = ()) -> Any:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchone()[0]
