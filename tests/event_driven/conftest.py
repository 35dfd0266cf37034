"""Fixtures of the event-driven tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import psycopg
import pytest


@pytest.fixture()
def mes_marks(warehouse_dsn) -> Callable[[dict[str, datetime]], None]:
    """Sets MES high-water marks (entity → loaded_upto) for a test; the session's marks come
    back after it."""
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        saved = conn.execute("select entity, loaded_upto, batch_id from ops.extract_watermark "
                             "where system = 'mes'").fetchall()

    def set_marks(marks: dict[str, datetime]) -> None:
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            for entity, upto in marks.items():
                conn.execute(
                    "insert into ops.extract_watermark (system, entity, loaded_upto, batch_id) "
                    "values ('mes', %s, %s, 'event_driven_test') on conflict (system, entity) "
                    "do update set loaded_upto = excluded.loaded_upto", (entity, upto))

    yield set_marks
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("delete from ops.extract_watermark where system = 'mes'")
        for entity, upto, batch_id in saved:
            conn.execute("insert into ops.extract_watermark (system, entity, loaded_upto, "
                         "batch_id) values ('mes', %s, %s, %s)", (entity, upto, batch_id))
