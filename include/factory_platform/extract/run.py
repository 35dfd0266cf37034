"""The extraction task: read one window of one entity through its system's client, load it.

Called by every `extract_<system>` DAG task with the run's data interval. Clients resolve
Airflow connections, so pointing the platform at a real plant is configuration only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime

from factory_platform.extract import loader
from factory_platform.extract.clients import Window, client_for
from factory_platform.sources import Entity, Source, get_source
from factory_platform.warehouse import warehouse_dsn

log = logging.getLogger(__name__)


def load_target(source: Source, entity: Entity) -> loader.LoadTarget:
    return loader.LoadTarget(
        system=source.system, entity=entity.name, fields=entity.fields,
        natural_key=entity.natural_key, replace_column=entity.cursor,
        max_reject_share=source.max_reject_share,
    )


def extract_interval(system: str, entity_name: str, interval_start: datetime,
                     interval_end: datetime, run_id: str | None = None,
                     dsn: str | None = None) -> dict:
    """Extract `[interval_start - lookback, interval_end)` of one entity into raw_<system>."""
    source = get_source(system)
    entity = source.entity(entity_name)
    window = Window(start=interval_start - source.lookback, end=interval_end,
                    interval_start=interval_start, interval_end=interval_end)
    extraction = client_for(source.interface).open_extraction(source, entity, window)
    result = loader.load_batch(
        dsn or warehouse_dsn(), load_target(source, entity), extraction,
        interval_start=interval_start, interval_end=interval_end, window_start=window.start,
        run_id=run_id,
    )
    log.info("%s.%s [%s, %s) from %s: read %d, loaded %d, quarantined %d, duplicates %d, "
             "replaced %d", system, entity_name, window.start, interval_end,
             extraction.source_label, result.rows_read, result.rows_loaded,
             result.rows_quarantined, result.duplicates_skipped, result.rows_replaced)
    return asdict(result)


def extract_windows(system: str, windows: list[tuple[datetime, datetime]],
                    dsn: str | None = None) -> None:
    """Every entity of a system over consecutive windows, without Airflow (a history load in a
    test or a benchmark): a snapshot entity (master data) once, at the last window."""
    for entity in get_source(system).entities:
        if entity.option("mode") == "snapshot":
            extract_interval(system, entity.name, *windows[-1], dsn=dsn)
            continue
        for start, end in windows:
            extract_interval(system, entity.name, start, end, dsn=dsn)
