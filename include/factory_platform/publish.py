"""Publishing of gated marts to the `reporting` schema.

A published table is replaced in one transaction from its gated mart, so readers see either the
previous publication or the new one, never a half-written table.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

REPORTING_TABLES = {
    # reporting table: gated mart it is published from
    "production_line_day": "marts.mart_production_line_day",
}


def publish_reporting(dsn: str, run_id: str) -> dict[str, int]:
    import psycopg

    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        conn.execute("create schema if not exists reporting")
        for table, mart in REPORTING_TABLES.items():
            target = f"reporting.{table}"
            conn.execute(
                f"create table if not exists {target} as "
                f"select *, null::timestamptz as published_at, null::text as published_by_run "
                f"from {mart} with no data"
            )
            conn.execute(f"delete from {target}")
            inserted = conn.execute(
                f"insert into {target} select *, now(), %s from {mart}", (run_id,)
            ).rowcount
            counts[target] = inserted
            log.info("published %d rows from %s to %s", inserted, mart, target)
    return counts
