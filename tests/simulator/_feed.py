"""Read a world's MES feed straight from its SQLite file (latest version per id)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def latest(world: Path, table: str) -> list[dict[str, Any]]:
    """Every record of `table`, keeping the greatest updated_at per id."""
    conn = sqlite3.connect(world / "mes" / "mes.sqlite")
    try:
        rows = conn.execute(
            f"SELECT id, body FROM {table} ORDER BY updated_at, id"
        ).fetchall()
    finally:
        conn.close()
    out: dict[str, dict[str, Any]] = {}
    for rec_id, body in rows:
        out[rec_id] = json.loads(body)
    return list(out.values())


def all_rows(world: Path, table: str) -> list[tuple[int, str]]:
    """(updated_at, id) of every stored row."""
    conn = sqlite3.connect(world / "mes" / "mes.sqlite")
    try:
        return conn.execute(
            f"SELECT updated_at, id FROM {table} ORDER BY 1, 2"
        ).fetchall()
    finally:
        conn.close()
