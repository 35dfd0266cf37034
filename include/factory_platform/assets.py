"""One helper makes every warehouse asset URI, so extraction outlets and dbt schedules match.

The form is the one the Airflow postgres provider validates and Cosmos emits on Airflow 3:
`postgres://<host>:<port>/<database>/<schema>/<table>`. Host and port name the logical
warehouse (`WAREHOUSE_ASSET_AUTHORITY`), not a connection, so URIs stay stable across machines.
"""

from __future__ import annotations

import os

DEFAULT_AUTHORITY = "warehouse:5432"

# Not a table: the asset transform_dbt's quality gate emits and the publishing DAGs wait for.
GATED_MARTS_URI = "gate://warehouse/marts"


def warehouse_asset_uri(schema: str, table: str, database: str = "warehouse") -> str:
    authority = os.environ.get("WAREHOUSE_ASSET_AUTHORITY", DEFAULT_AUTHORITY)
    return f"postgres://{authority}/{database}/{schema}/{table}"


def warehouse_asset(schema: str, table: str):
    """The Airflow `Asset` of a warehouse table."""
    from airflow.sdk import Asset

    return Asset(warehouse_asset_uri(schema, table))


def gated_marts_asset():
    """Updated when a transform run built every model (their tests passed) and recorded the
    gate checks per scope; publishing then decides per scope from dq.scope_status."""
    from airflow.sdk import Asset

    return Asset(GATED_MARTS_URI)
