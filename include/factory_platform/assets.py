"""One helper makes every warehouse asset URI, so extraction outlets and dbt schedules match.

The form is the one the Airflow postgres provider validates and Cosmos emits on Airflow 3:
`postgres://<host>:<port>/<database>/<schema>/<table>`. Host and port name the logical
warehouse (`WAREHOUSE_ASSET_AUTHORITY`), not a connection, so URIs stay stable across machines.
"""

from __future__ import annotations

import os

DEFAULT_AUTHORITY = "warehouse:5432"


def warehouse_asset_uri(schema: str, table: str, database: str = "warehouse") -> str:
    authority = os.environ.get("WAREHOUSE_ASSET_AUTHORITY", DEFAULT_AUTHORITY)
    return f"postgres://{authority}/{database}/{schema}/{table}"


def warehouse_asset(schema: str, table: str):
    """The Airflow `Asset` of a warehouse table."""
    from airflow.sdk import Asset

    return Asset(warehouse_asset_uri(schema, table))
