"""MES: records stored in a SQLite change feed that the HTTP server pages through.

Each entity is one table `(updated_at INTEGER epoch, id TEXT, body TEXT JSON)` with primary key
`(updated_at, id)`, so keyset pagination by `(updated_at, id)` is an index range scan and serving
stays memory-bounded however large the world is.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

ENTITIES: dict[str, tuple[str, str]] = {
    "work-orders": ("work_orders", "work_order_id"),
    "operations": ("operations", "operation_id"),
    "confirmations": ("confirmations", "confirmation_id"),
    "machine-states": ("machine_states", "state_id"),
    "material-consumptions": ("material_consumptions", "consumption_id"),
    "produced-lots": ("produced_lots", "lot_id"),
}
"""URL entity → (table name, id field)."""


def dumps(record: dict[str, Any]) -> str:
    """Compact UTF-8 JSON (Chinese kept as-is), stable key order as built."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class FeedStore:
    """Append-only writer of a SQLite change feed (one table per entity)."""

    def __init__(self, path: Path, entities: dict[str, tuple[str, str]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        self.path = path
        self.entities = entities
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=OFF")
        self.conn.execute("PRAGMA synchronous=OFF")
        for table, _id in entities.values():
            self.conn.execute(
                f"CREATE TABLE {table} (updated_at INTEGER NOT NULL, id TEXT NOT NULL, "
                "body TEXT NOT NULL, PRIMARY KEY (updated_at, id)) WITHOUT ROWID"
            )
        self.buffers: dict[str, list[tuple[int, str, str]]] = {
            t: [] for t, _ in entities.values()
        }
        self.counts: dict[str, int] = {t: 0 for t, _ in entities.values()}

    def add(self, entity: str, record: dict[str, Any], updated_at: int) -> None:
        """Queue one record version; `record` must already carry its `updated_at` text."""
        table, id_field = self.entities[entity]
        self.buffers[table].append((updated_at, record[id_field], dumps(record)))

    def flush(self) -> None:
        """Write queued rows (sorted, so the file does not depend on emission order)."""
        for table, rows in self.buffers.items():
            if rows:
                rows.sort()
                self.conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows)
                self.counts[table] += len(rows)
                rows.clear()
        self.conn.commit()

    def close(self) -> None:
        """Flush and close the database."""
        self.flush()
        self.conn.close()
