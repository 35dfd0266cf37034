"""The source registry: every plant system, its interface, schedule and entities, declared once.

One module per system in this package defines `SOURCE = Source(...)`; the registry collects them.
Adding an entity is one `Entity(...)` entry in its system's module; adding a system is one new
module (plus, for a new kind of interface, one client registered in `extract/clients.py`).
The extraction DAGs, raw tables, assets and load audit are all derived from this registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from factory_platform.extract.fields import Field


@dataclass(frozen=True)
class Entity:
    """One entity of a source system, landed as `raw_<system>.<name>`."""

    name: str
    endpoint: str  # API path, SQL table/query name or file-name pattern, by interface
    natural_key: tuple[str, ...]
    cursor: str | None  # column that places a record in an interval (e.g. updated_at)
    fields: tuple[Field, ...]
    description: str = ""
    options: tuple[tuple[str, str], ...] = ()  # interface-specific settings, e.g. (("kind", "snapshot"),)

    def option(self, name: str, default: str | None = None) -> str | None:
        return dict(self.options).get(name, default)


# Sessions an extraction may hold on a plant system at once, by interface, unless its source
# declares `max_connections`: a plant database (ERP, EAM) serves the plant's own users first, a
# plant API little more; a file drop is our own folder and costs the plant nothing.
INTERFACE_MAX_CONNECTIONS = {"sql": 3, "rest": 4, "csv_drop": 8, "xml_drop": 8}


@dataclass(frozen=True)
class Source:
    """A plant system and how it is reached."""

    system: str  # slug: raw_<system>, dbt source, extractor, connection and DAG id
    title: str
    interface: str  # rest | sql | csv_drop | xml_drop (see extract/clients.py)
    conn_id: str  # Airflow connection (for drops: a connection whose `extra.path` is the inbox)
    schedule_cron: str  # data-interval cron (UTC)
    lookback: timedelta
    entities: tuple[Entity, ...]
    max_reject_share: float = 0.05
    page_size: int = 500
    encoding: str = "utf-8"
    owner: str = "data-platform"
    # --- limits and fault handling (nothing lost: see extract/incidents.py and extract/run.py)
    # File drops: a file is taken once its size and mtime have not changed for this long, or
    # at once when `completion_marker` (e.g. "{name}.done", "{name}.ok") exists beside it.
    settle_time: timedelta = timedelta(seconds=30)
    completion_marker: str | None = None
    max_file_bytes: int = 2 << 30  # a larger file is set aside
    max_record_bytes: int = 1 << 20  # a longer line / record is quarantined
    # REST: no answer may take longer than this in total (connect + headers + body), and a
    # window may take at most this many pages.
    request_deadline: timedelta = timedelta(seconds=120)
    max_pages: int = 10_000
    # An answer with no records for a window where raw holds rows is refused unless the source
    # declares that its windows are complete snapshots (an empty window then deletes).
    empty_window_deletes: bool = False
    # High-water mark catch-up: after an outage a scheduled run loads the missed time first,
    # in slices of this size, at most `max_catchup_slices` per run (the next runs go on).
    catchup_slice: timedelta = timedelta(hours=6)
    max_catchup_slices: int = 24
    # Every extraction task is stopped (and retried) after this long.
    task_timeout: timedelta = timedelta(minutes=30)
    # How many extraction tasks may reach this system at once (each holds one session or
    # connection while it reads): the size of its Airflow pool `plant_<system>`
    # (factory_platform.pools), shared by scheduled runs, catch-up, reloads and backfills, on
    # every worker. None: the default of its interface (INTERFACE_MAX_CONNECTIONS).
    max_connections: int | None = None

    @property
    def pool(self) -> str:
        """The Airflow pool every extraction task of this system runs in."""
        return f"plant_{self.system}"

    @property
    def pool_slots(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        return INTERFACE_MAX_CONNECTIONS[self.interface]

    @property
    def dag_id(self) -> str:
        return f"extract_{self.system}"

    def entity(self, name: str) -> Entity:
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(f"{self.system} has no entity {name!r}")


@lru_cache(maxsize=1)
def all_sources() -> dict[str, Source]:
    """Every `SOURCE` defined by a module of this package, by system slug."""
    found: dict[str, Source] = {}
    for module in pkgutil.iter_modules(__path__):
        source = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SOURCE", None)
        if isinstance(source, Source):
            found[source.system] = source
    return dict(sorted(found.items()))


def get_source(system: str) -> Source:
    sources = all_sources()
    try:
        return sources[system]
    except KeyError:
        raise KeyError(f"unknown plant system {system!r}; known: {sorted(sources)}") from None
