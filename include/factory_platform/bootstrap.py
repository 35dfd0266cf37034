"""Prepare a warehouse for the platform: layer schemas, ops tables and every raw table the
source registry declares (empty until its system is extracted), so dbt can build from the
first run on, whichever systems have delivered so far. Idempotent.

    PYTHONPATH=include python -m factory_platform.bootstrap     # uses PG* or the warehouse conn
"""

from __future__ import annotations

from factory_platform.extract import load
from factory_platform.extract.clients import client_for
from factory_platform.extract.run import is_stream, load_target
from factory_platform.sources import all_sources
from factory_platform.warehouse import ensure_warehouse


def bootstrap_warehouse(dsn: str) -> int:
    """Create whatever is missing; return the number of raw tables declared."""
    import psycopg

    ensure_warehouse(dsn)
    count = 0
    with psycopg.connect(dsn) as conn:
        for source in all_sources().values():
            conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"ddl raw_{source.system}",))
            for entity in source.entities:
                target = load_target(source, entity)
                if entity.option("load") == "copy":
                    load.ensure_historian_tables(conn, target)
                elif is_stream(source):  # landed by its own process, in its own table (MQTT)
                    client_for(source.interface).ensure_tables(conn, target)
                else:
                    load.ensure_raw_table(conn, target)
                count += 1
            conn.commit()
    return count


if __name__ == "__main__":
    import os

    from factory_platform.warehouse import env_dsn, warehouse_dsn

    dsn = env_dsn() if os.environ.get("PGHOST") else warehouse_dsn()
    print(f"warehouse ready: {bootstrap_warehouse(dsn)} raw tables declared")
