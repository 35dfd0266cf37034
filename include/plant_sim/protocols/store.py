"""Read access to the shop floor's signals (written by `systems/shopfloor.py`)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from plant_sim.systems.shopfloor import DB, payload, topic


class ShopfloorStore:
    """Read-only queries on `shopfloor.sqlite`; one connection per thread."""

    def __init__(self, world: Path) -> None:
        self.path = world / DB
        if not self.path.exists():
            raise FileNotFoundError(
                f"{self.path}: generate the world again (no shop floor)"
            )
        self._local = threading.local()
        cur = self.conn().execute("SELECT * FROM equipment ORDER BY machine_code")
        cols = [d[0] for d in cur.description]
        self.equipment: list[dict[str, Any]] = [
            dict(zip(cols, r, strict=True)) for r in cur
        ]
        self.by_machine = {e["machine_code"]: e for e in self.equipment}
        self.presets: dict[tuple[str, str], int] = {
            (m, c): p
            for m, c, p in self.conn().execute(
                "SELECT machine_code, counter, preset FROM plc_counters"
            )
        }

    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(
                f"file:{self.path}?mode=ro&immutable=1",
                uri=True,
                check_same_thread=False,
            )
            self._local.conn = c
        return c

    def value_at(
        self, node: str, ms: int
    ) -> tuple[int, float | None, str | None, int] | None:
        """The last change of `node` at or before `ms`: (ts_ms, num, txt, status), or None."""
        return (
            self.conn()
            .execute(
                "SELECT ts_ms, num, txt, status FROM points WHERE node = ? AND ts_ms <= ? "
                "ORDER BY ts_ms DESC LIMIT 1",
                (node, ms),
            )
            .fetchone()
        )

    def history(
        self, node: str, start_ms: int, end_ms: int, limit: int
    ) -> list[tuple[int, float | None, str | None, int]]:
        """Changes of `node` in `[start_ms, end_ms]` (inclusive, as HistoryRead), oldest first."""
        return (
            self.conn()
            .execute(
                "SELECT ts_ms, num, txt, status FROM points WHERE node = ? AND ts_ms BETWEEN ? AND ? "
                "ORDER BY ts_ms LIMIT ?",
                (node, start_ms, end_ms, limit),
            )
            .fetchall()
        )

    def messages_after(
        self, cursor: tuple[int, int], upto_ms: int, limit: int = 2000
    ) -> list[tuple[int, int, str, str, str]]:
        """MQTT plan rows after `cursor` = (publish_ms, seq) and due by `upto_ms`, in publish
        order: (seq, publish_ms, message_id, topic, payload)."""
        rows = (
            self.conn()
            .execute(
                "SELECT seq, publish_ms, message_id, machine_code, kind, body, event_ms FROM mqtt "
                "WHERE (publish_ms, seq) > (?, ?) AND publish_ms <= ? ORDER BY publish_ms, seq LIMIT ?",
                (cursor[0], cursor[1], upto_ms, limit),
            )
            .fetchall()
        )
        return [
            (
                seq,
                pub,
                mid,
                topic(self.by_machine[m], kind),
                payload(mid, ev, m, kind, body),
            )
            for seq, pub, mid, m, kind, body, ev in rows
        ]

    def actions(self) -> list[tuple[int, str, int]]:
        """Planned MQTT actions: (at_ms, reconnect | broker_restart, seconds)."""
        return (
            self.conn()
            .execute("SELECT at_ms, action, seconds FROM mqtt_actions ORDER BY at_ms")
            .fetchall()
        )
