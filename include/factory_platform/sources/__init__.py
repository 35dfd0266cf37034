"""The source registry: every plant system, its interface, schedule and entities, declared once.

One module per system in this package defines `SOURCE = Source(...)`; the registry collects them.
The module's docstring is its `extract_<system>` DAG's documentation. Adding an entity is one
`Entity(...)` entry in its system's module; adding a system is one new module (plus, for a new
kind of interface, one client registered in `extract/clients.py`). Everything else about a
system is derived from here: its DAG and tasks (`dags/extract_sources.py`), assets, raw schema
and tables, pool, the warehouse's schema list, its connection in the embedded default
(`launcher/settings.py`), in compose and `.env.example` (`python -m factory_platform.derived`),
the dbt source's columns and types (generated for a new system, checked for every system by
tests/skeleton/test_registry_derived.py) and every test and benchmark list of systems.

`SFDP_EXTRA_SOURCES` (folders, separated by `:`) adds the `SOURCE` of each `*.py` module in
them: a system kept outside this package (the add-a-system test's CRM, a plant's own system
in a deployment) without editing it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from factory_platform.fields import Field
from factory_platform.rest_spec import RestApi


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
# An MQTT broker: one durable session per environment (its client id); an OPC UA server:
# sessions are its scarcest resource.
INTERFACE_MAX_CONNECTIONS = {"sql": 3, "rest": 4, "csv_drop": 8, "xml_drop": 8, "mqtt": 1,
                             "opcua": 2}

# The kind of Airflow connection each interface reads: an HTTP API (host, port, login and the
# secret as password), a database (a postgres URI), a folder (`fs`, `extra.path` the inbox), an
# MQTT broker (host, port, login, password: extract/mqtt.py) or an OPC UA endpoint (user,
# certificates: extract/opcua.py).
INTERFACE_CONNECTION_KIND = {"rest": "http", "sql": "postgres", "csv_drop": "fs",
                             "xml_drop": "fs", "mqtt": "mqtt", "opcua": "opcua"}

# The change signals a source may declare (`Source.change_feed`), by the interfaces they fit.
CHANGE_FEEDS = {"api": ("rest",), "inbox": ("csv_drop", "xml_drop")}


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
    # REST: the window's query parameters, the paginator and the auth (rest_spec.py)
    rest: RestApi = field(default_factory=RestApi)
    # The change signal the system offers (factory_platform.change_triggers): "api" — its REST
    # API is asked every few seconds for records newer than each entity's high-water mark;
    # "inbox" — a settled file landing in its inbox. A change starts `extract_<system>` at
    # once; the schedule stays as the safety net. None: the schedule only.
    change_feed: str | None = None
    # The extract DAG's documentation: the source module's docstring unless given.
    doc_md: str = ""

    def __post_init__(self) -> None:
        if self.change_feed is not None and self.interface not in CHANGE_FEEDS.get(
                self.change_feed, ()):
            raise ValueError(f"{self.system}: change_feed {self.change_feed!r} does not fit "
                             f"interface {self.interface!r}; known: {CHANGE_FEEDS}")

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

    @property
    def raw_schema(self) -> str:
        return f"raw_{self.system}"

    @property
    def connection_kind(self) -> str:
        """`http`, `postgres` or `fs`: what its connection `conn_id` must be."""
        return INTERFACE_CONNECTION_KIND[self.interface]

    def entity(self, name: str) -> Entity:
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(f"{self.system} has no entity {name!r}")


def _modules():
    """This package's modules, then those of the SFDP_EXTRA_SOURCES folders."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            yield importlib.import_module(f"{__name__}.{module.name}")
    for folder in filter(None, os.environ.get("SFDP_EXTRA_SOURCES", "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            name = f"{__name__}._extra_{path.stem}"
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            yield sys.modules[name]


@lru_cache(maxsize=1)
def all_sources() -> dict[str, Source]:
    """Every `SOURCE` defined by a module of this package (or of an SFDP_EXTRA_SOURCES
    folder), by system slug; its DAG documentation is the module's docstring."""
    found: dict[str, Source] = {}
    for module in _modules():
        source = getattr(module, "SOURCE", None)
        if isinstance(source, Source):
            if source.system in found:
                raise ValueError(f"two registry modules declare the system {source.system!r}")
            if not source.doc_md and module.__doc__:
                source = replace(source, doc_md=module.__doc__)
            found[source.system] = source
    return dict(sorted(found.items()))


def raw_schemas() -> tuple[str, ...]:
    """`raw_<system>` of every registered system."""
    return tuple(source.raw_schema for source in all_sources().values())


def get_source(system: str) -> Source:
    sources = all_sources()
    try:
        return sources[system]
    except KeyError:
        raise KeyError(f"unknown plant system {system!r}; known: {sorted(sources)}") from None
