"""Read a generated plant world's truth and MES feed straight from its files, for the tests
that compare what the platform or a protocol shows with what the plant did."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any


def truth(world: Path, table: str) -> list[dict[str, str]]:
    """The rows of `truth/<table>.csv`."""
    with open(world / "truth" / f"{table}.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def mes_states(world: Path) -> dict[str, list[dict[str, Any]]]:
    """MES machine-state intervals per machine (each state id once, its latest version),
    ordered by start."""
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    with sqlite3.connect(world / "mes" / "mes.sqlite") as c:
        for (body,) in c.execute("SELECT body FROM machine_states ORDER BY updated_at, id"):
            r = json.loads(body)
            out[r["machine_code"]][r["state_id"]] = r
    return {m: sorted(v.values(), key=lambda r: r["start_at"]) for m, v in out.items()}
