"""Where the dbt project lives and how Cosmos runs it.

Cosmos renders the dbt DAG from `target/manifest.json` (LoadMode.DBT_MANIFEST), so parsing a
DAG file never runs dbt; `parse_manifest` (called by `make run`, the tests and the deployment's
init step) refreshes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = Path(os.environ.get("DBT_PROJECT_DIR", PROJECT_ROOT / "dbt_project"))
MANIFEST_PATH = DBT_PROJECT_DIR / "target" / "manifest.json"


def dbt_executable() -> Path:
    return Path(sys.executable).parent / "dbt"


def parse_manifest(env: dict[str, str] | None = None) -> Path:
    """Run `dbt parse` to write target/manifest.json; raise with dbt's output if it fails."""
    result = subprocess.run(
        [str(dbt_executable()), "parse", "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(DBT_PROJECT_DIR), "--quiet"],
        env=env or dict(os.environ), capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{result.stdout}\n{result.stderr}")
    return MANIFEST_PATH


def dsn_environment(dsn: str) -> dict[str, str]:
    """PG* variables for dbt's profile (dbt_project/profiles.yml) from a libpq DSN."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
             "dbname": "PGDATABASE"}
    return {env: str(parts[key]) for key, env in names.items() if parts.get(key) is not None}


def run_dbt(dsn: str, *args: str, target_path: str | None = None) -> subprocess.CompletedProcess:
    """`dbt <args>` on the project against the warehouse `dsn` (outside Cosmos' per-model
    tasks: the gate's test run, the post-publishing reconciliation). Returns dbt's result;
    the caller decides what a non-zero return code means."""
    extra = ["--target-path", target_path, "--log-path", target_path] if target_path else []
    return subprocess.run(
        [str(dbt_executable()), *args, "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(DBT_PROJECT_DIR), *extra],
        # callers read the artifacts (run_results.json, manifest.json): write them even when
        # the surrounding process runs Cosmos' model tasks with DBT_WRITE_JSON=false
        env=dict(os.environ, **dsn_environment(dsn), DBT_SEND_ANONYMOUS_USAGE_STATS="false",
                 DBT_WRITE_JSON="true"),
        capture_output=True, text=True, check=False,
    )
