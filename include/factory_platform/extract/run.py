"""The extraction task: resolve the system's connection, read one interval, load it.

Called by every `extract_<system>` DAG task with the run's data interval. Pure functions in
`rest`, `loader` and the other clients do the work; this module only wires them to Airflow
connections, so pointing the platform at a real plant is configuration only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime

from factory_platform.extract import loader, rest
from factory_platform.sources import Entity, Source, get_source
from factory_platform.warehouse import warehouse_dsn

log = logging.getLogger(__name__)


def rest_endpoint(conn_id: str) -> rest.RestEndpoint:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    scheme = conn.extra_dejson.get("scheme", "http")
    port = f":{conn.port}" if conn.port else ""
    return rest.RestEndpoint(base_url=f"{scheme}://{conn.host}{port}", api_key=conn.password or None)


def load_target(source: Source, entity: Entity) -> loader.LoadTarget:
    return loader.LoadTarget(
        system=source.system, entity=entity.name, fields=entity.fields,
        natural_key=entity.natural_key, replace_column=entity.cursor,
        max_reject_share=source.max_reject_share,
    )


def extract_interval(system: str, entity_name: str, interval_start: datetime,
                     interval_end: datetime, run_id: str | None = None) -> dict:
    """Extract `[interval_start - lookback, interval_end)` of one entity into raw_<system>."""
    source = get_source(system)
    entity = source.entity(entity_name)
    window_start = interval_start - source.lookback
    if source.interface != "rest":
        raise NotImplementedError(f"{system}: interface {source.interface!r} has no client yet")
    endpoint = rest_endpoint(source.conn_id)
    records = rest.iter_records(endpoint, entity.endpoint, window_start, interval_end,
                                id_field=entity.natural_key[0], page_size=source.page_size)
    result = loader.load_batch(
        warehouse_dsn(), load_target(source, entity), records,
        interval_start=interval_start, interval_end=interval_end, window_start=window_start,
        source_label=f"{endpoint.base_url}{entity.endpoint}", run_id=run_id,
    )
    log.info("%s.%s [%s, %s): read %d, loaded %d, quarantined %d, duplicates %d, replaced %d",
             system, entity_name, window_start, interval_end, result.rows_read,
             result.rows_loaded, result.rows_quarantined, result.duplicates_skipped,
             result.rows_replaced)
    return asdict(result)
