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
        env=env or dict(os.environ), capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{result.stdout}\n{result.stderr}")
    return MANIFEST_PATH
