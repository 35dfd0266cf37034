"""Shared steps for tests that need the warehouse built from the simulated plant: extract
systems through the real clients (no Airflow), run dbt through its CLI, reset the platform's
schemas. Imported by test modules as `_pipeline` (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT = str(PROJECT_ROOT / ".venv" / "bin" / "dbt")
DBT_DIR = str(PROJECT_ROOT / "dbt_project")
ALL_SYSTEMS = ("erp", "mes", "wms", "scada", "qms", "plm", "eam", "ems")


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
    from factory_platform.extract.run import extract_interval
    from factory_platform.sources import get_source

    for entity in get_source(system).entities:
        if entity.option("mode") == "snapshot":
            extract_interval(system, entity.name, *windows[-1], dsn=dsn)
            continue
        for start, end in windows:
            extract_interval(system, entity.name, start, end, dsn=dsn)


def reset_platform_schemas(dsn: str) -> None:
    """Drop everything the pipeline builds (not the truth), as on a fresh deployment."""
    from factory_platform.bootstrap import bootstrap_warehouse
    from factory_platform.warehouse import SCHEMAS

    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema in (*SCHEMAS, "dq_failures"):
            conn.execute(f"drop schema if exists {schema} cascade")
    bootstrap_warehouse(dsn)


def dbt(command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`dbt <command> <args>` on the project, against the test warehouse (PG* from conftest)."""
    result = subprocess.run(
        [DBT, command, "--project-dir", DBT_DIR, "--profiles-dir", DBT_DIR, *args],
        cwd=PROJECT_ROOT, env=dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false"),
        capture_output=True, text=True, check=False,
    )
    if check:
        assert result.returncode == 0, f"dbt {command} failed:\n{result.stdout[-8000:]}"
    return result


def dbt_build_selected(select: list[str], *args: str) -> subprocess.CompletedProcess:
    """`dbt build` of the selected models and the tests on them (cautious indirect selection)."""
    return dbt("build", "--select", *select, "--indirect-selection", "cautious",
               "--threads", "4", *args)


def interval_vars(start: datetime, end: datetime) -> str:
    """dbt --vars for an incremental build of [start, end)."""
    return json.dumps({"interval_start": start.isoformat(), "interval_end": end.isoformat()})


def rows(dsn: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()
