"""One client per kind of interface. Each module exposes

    open_extraction(source: Source, entity: Entity, window: Window) -> Extraction

which resolves the source's Airflow connection, reads the window and returns the records (and,
for file drops, which files it replaces and what to do with them after the commit). Clients
are imported only when a task runs, never when a DAG file is parsed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime

CLIENTS = {
    "rest": "factory_platform.extract.rest",
    "sql": "factory_platform.extract.sql",
    "csv_drop": "factory_platform.extract.files",
    "xml_drop": "factory_platform.extract.plm_xml",
    "mqtt": "factory_platform.extract.mqtt",  # a stream: extract/mqtt_ingest.py lands it
    "opcua": "factory_platform.extract.opcua",
}


@dataclass(frozen=True)
class Window:
    """What one extraction run reads: `[start, end)` = its interval widened by the lookback."""

    start: datetime
    end: datetime
    interval_start: datetime
    interval_end: datetime


def client_for(interface: str):
    try:
        return importlib.import_module(CLIENTS[interface])
    except KeyError:
        raise KeyError(f"no client for interface {interface!r}; known: {sorted(CLIENTS)}") from None
