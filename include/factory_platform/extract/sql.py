"""SQL client for plant databases (ERP, EAM): interval reads streamed through a server-side cursor.

`open_extraction(source, entity, window)` resolves the Airflow connection `source.conn_id`
(a Postgres URI; `extra.timezone` optionally names the database's default time zone), builds one
read-only query for the entity and streams its rows with a named (server-side) cursor, one page
of `source.page_size` rows at a time, so memory stays bounded whatever the window holds.

How an entity is read is declared in its registry entry (`Entity.options`):

* `("mode", "snapshot")` — small master data without a change column: the whole table, every
  run. The records carry one constant `source` label that is also the extraction's
  `replace_sources`, so the load swaps the whole snapshot in one transaction (a row deleted in the
  source disappears from raw). The entity's `cursor` is None.
* `("mode", "window")` (default) — a row belongs to the interval that holds its *version
  instant*: the first non-null of the `version_columns` (comma-separated, default: the entity's
  cursor). When the version instant is not itself a source column, the extractor adds it under
  the entity's `cursor` name (e.g. `released_at_utc`, `version_at`), as `timestamptz`; the loader
  replaces raw rows by that column over `[window.start, window.end)`, so every version of a row
  lands in exactly one interval and staging keeps the latest per natural key.
  The predicate is written per column as plain ranges (`col >= lo and col < hi`, OR-ed for a
  coalesce), so an index on each column serves it; never a full scan.
* `("mode", "date_window")` — rows keyed by a local business date (`date_column`) that can be
  restated (inventory balances): each run reads every date its window touches in any zone on
  earth (UTC-12 … UTC+14, so no zone lookup), plus `late_days` (default 1) before, and replaces
  exactly those dates — a natural-key snapshot window. Each record's `source` is the label of
  its date, and the extraction's `replace_sources` are the labels of every date in scope (a
  date whose rows vanished in the source is emptied in raw).

Local times (`("local_time_zone", <column>|"*")`): the ERP stores `timestamp without time zone`
in each plant's zone. `zones_query` returns `(key, IANA zone)` pairs (e.g. `erp.plants`); rows
are matched to their zone by `<column>` (a plant code); `"*"` (or a key that is null or not in
the map) uses the default zone: `extra.timezone` of the connection, else the only zone the map
holds (with several zones and no default, such rows cannot be placed and the run fails clearly).
The UTC window becomes, per zone, a sargable range on the local column widened by the zone's
UTC offsets, plus the exact test `(col AT TIME ZONE zone) >= start and < end`. PostgreSQL reads
a local time of the repeated hour on the DST night as the later (standard-time) instant and a
time in the spring gap with the offset before it; because the placement is that one function,
each row lands in exactly one interval, also on the 25-hour day. The derived UTC column holds
the same value, so staging needs no second rule.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from factory_platform.extract.load import Extraction, SourceRecord

log = logging.getLogger(__name__)


class SourceSchemaError(RuntimeError):
    """The source table lacks a column the registry declares as required."""


class SourceConfigError(RuntimeError):
    """The entity's options or the source's zone data do not allow placing its rows."""


@dataclass(frozen=True)
class SqlEndpoint:
    """A plant database reached through an Airflow connection."""

    conn_id: str
    dsn: str
    default_zone: str | None = None


@dataclass(frozen=True)
class Query:
    """One read: SQL text (psycopg `sql.Composed`), its parameters and the replace labels."""

    statement: Any
    params: dict[str, Any]
    label: str
    replace_sources: list[str] | None = None
    date_labels: dict[date, str] | None = None
    date_column: str | None = None


def resolve_endpoint(conn_id: str) -> SqlEndpoint:
    """The libpq DSN (and default zone) of an Airflow Postgres connection."""
    from airflow.sdk import BaseHook

    from factory_platform.warehouse import connection_dsn

    conn = BaseHook.get_connection(conn_id)
    dsn = connection_dsn(conn.host, conn.port, conn.login, conn.password, conn.schema)
    return SqlEndpoint(conn_id=conn_id, dsn=dsn,
                       default_zone=(conn.extra_dejson or {}).get("timezone"))


def open_extraction(source, entity, window) -> Extraction:
    """Client entry point (see `extract.clients`): the entity's rows that belong to the window.
    Nothing is read until the load iterates the records (then over one connection)."""
    endpoint = resolve_endpoint(source.conn_id)
    label, replace_sources = describe(endpoint, entity, window)
    records = stream_records(endpoint, entity, window, page_size=source.page_size,
                             application_name=f"sfdp-extract-{source.system}")
    return Extraction(records=records, source_label=label, replace_sources=replace_sources)


def describe(endpoint: SqlEndpoint, entity, window) -> tuple[str, list[str] | None]:
    """The batch's source label and, for snapshots and date windows, the `_source` labels the
    load replaces (known without reading the source)."""
    mode = entity.option("mode", "window")
    if mode == "snapshot":
        label = _snapshot_label(endpoint, entity)
        return label, [label]
    if mode == "date_window":
        first, last, labels = _date_scope(endpoint, entity, window)
        return (f"{endpoint.conn_id}:{entity.endpoint} {entity.option('date_column')} "
                f"[{first.isoformat()}, {last.isoformat()}]"), list(labels.values())
    if mode == "window":
        return f"{endpoint.conn_id}:{entity.endpoint} [{_iso(window.start)}, {_iso(window.end)})", None
    raise SourceConfigError(f"{entity.name}: unknown SQL read mode {mode!r}")


def build_query(conn, endpoint: SqlEndpoint, entity, window) -> Query:
    """The read of one entity for one window, by the entity's mode (`conn` reads the zones)."""
    mode = entity.option("mode", "window")
    if mode == "snapshot":
        return _snapshot_query(endpoint, entity)
    if mode == "window":
        return _window_query(conn, endpoint, entity, window)
    if mode == "date_window":
        return _date_window_query(endpoint, entity, window)
    raise SourceConfigError(f"{entity.name}: unknown SQL read mode {mode!r}")


def _table(entity):
    from psycopg import sql

    return sql.Identifier(*entity.endpoint.split("."))


def _snapshot_query(endpoint: SqlEndpoint, entity) -> Query:
    from psycopg import sql

    if entity.cursor is not None:
        raise SourceConfigError(f"{entity.name}: a snapshot entity has no cursor")
    label = _snapshot_label(endpoint, entity)
    key = sql.SQL(", ").join(sql.Identifier(c) for c in entity.natural_key)
    statement = sql.SQL("select t.* from {table} t order by {key}").format(
        table=_table(entity), key=key)
    return Query(statement=statement, params={}, label=label, replace_sources=[label])


def _snapshot_label(endpoint: SqlEndpoint, entity) -> str:
    return f"{endpoint.conn_id}:{entity.endpoint} snapshot"


def _window_query(conn, endpoint: SqlEndpoint, entity, window) -> Query:
    from psycopg import sql

    if entity.cursor is None:
        raise SourceConfigError(f"{entity.name}: a window entity needs a cursor column")
    columns = [c.strip() for c in (entity.option("version_columns") or entity.cursor).split(",")]
    zone_key = entity.option("local_time_zone")
    params: dict[str, Any] = {"window_start": window.start, "window_end": window.end}
    if zone_key:
        groups = _zone_groups(conn, endpoint, entity, zone_key)
    else:
        groups = [(None, None, None)]  # timestamptz columns: one branch, no zone

    branches = []
    for index, (zone, keys, is_default) in enumerate(groups):
        match = sql.SQL("true")
        if zone is not None:
            params[f"zone_{index}"] = zone
            lo, hi = local_bounds(window.start, window.end, zone)
            params[f"lo_{index}"], params[f"hi_{index}"] = lo, hi
            if zone_key != "*":
                col = sql.SQL("t.{}").format(sql.Identifier(zone_key))
                params[f"keys_{index}"] = keys
                in_keys = sql.SQL("{col} = any(%(keys_{i})s)").format(
                    col=col, i=sql.SQL(str(index)))
                if is_default:
                    params["all_keys"] = groups_all_keys(groups)
                    others = sql.SQL("({col} is null or not ({col} = any(%(all_keys)s)))").format(
                        col=col)
                    match = sql.SQL("({} or {})").format(in_keys, others) if keys else others
                else:
                    match = in_keys
        alternatives = []
        for position, column in enumerate(columns):
            earlier_null = [sql.SQL("t.{} is null").format(sql.Identifier(c))
                            for c in columns[:position]]
            alternatives.append(sql.SQL(" and ").join(
                [*earlier_null, _range(column, zone, index)]))
        branches.append(sql.SQL("({match} and ({alternatives}))").format(
            match=match, alternatives=sql.SQL(" or ").join(
                sql.SQL("({})").format(a) for a in alternatives)))

    select_extra = sql.SQL("")
    if entity.cursor not in columns:
        select_extra = sql.SQL(", {expr} as {name}").format(
            expr=_version_expression(columns, groups, zone_key), name=sql.Identifier(entity.cursor))
    statement = sql.SQL("select t.*{extra} from {table} t where {where}").format(
        extra=select_extra, table=_table(entity), where=sql.SQL(" or ").join(branches))
    label, _replace = describe(endpoint, entity, window)
    return Query(statement=statement, params=params, label=label)


def _range(column: str, zone: str | None, index: int):
    """`column` lies in the window: a plain range (sargable), plus the exact UTC test for local
    times."""
    from psycopg import sql

    col = sql.SQL("t.{}").format(sql.Identifier(column))
    if zone is None:
        return sql.SQL("{c} >= %(window_start)s and {c} < %(window_end)s").format(c=col)
    i = sql.SQL(str(index))
    return sql.SQL(
        "{c} >= %(lo_{i})s and {c} < %(hi_{i})s "
        "and ({c} at time zone %(zone_{i})s) >= %(window_start)s "
        "and ({c} at time zone %(zone_{i})s) < %(window_end)s"
    ).format(c=col, i=i)


def _version_expression(columns: list[str], groups, zone_key: str | None):
    """coalesce(...) of the version columns as UTC instants (per zone for local times)."""
    from psycopg import sql

    def instants(index: int | None):
        parts = []
        for column in columns:
            col = sql.SQL("t.{}").format(sql.Identifier(column))
            if index is None:
                parts.append(col)
            else:
                parts.append(sql.SQL("({c} at time zone %(zone_{i})s)").format(
                    c=col, i=sql.SQL(str(index))))
        return sql.SQL("coalesce({})").format(sql.SQL(", ").join(parts))

    if not zone_key:
        return instants(None)
    if zone_key == "*" or len(groups) == 1:
        return instants(0)
    col = sql.SQL("t.{}").format(sql.Identifier(zone_key))
    cases = []
    default_index = None
    for index, (_zone, keys, is_default) in enumerate(groups):
        if is_default:
            default_index = index
        if keys:
            cases.append(sql.SQL("when {col} = any(%(keys_{i})s) then {expr}").format(
                col=col, i=sql.SQL(str(index)), expr=instants(index)))
    otherwise = instants(default_index) if default_index is not None else sql.SQL("null")
    return sql.SQL("case {cases} else {otherwise} end").format(
        cases=sql.SQL(" ").join(cases), otherwise=otherwise)


def groups_all_keys(groups) -> list[str]:
    """Every zone key the zone map knows."""
    return sorted(k for _zone, keys, _default in groups for k in keys)


def _zone_map(conn, entity) -> dict[str, str]:
    """`{key: IANA zone}` from the entity's `zones_query` (a tiny master-data read)."""
    zones_query = entity.option("zones_query")
    if not zones_query:
        return {}
    rows = conn.execute(zones_query).fetchall()
    return {str(key): str(zone) for key, zone in rows if key is not None and zone}


def _zone_groups(conn, endpoint: SqlEndpoint, entity, zone_key: str):
    """`[(zone, keys, is_default)]`: the keys (plants) per zone, and which group also takes the
    rows whose key is null or unknown (the default zone)."""
    from zoneinfo import ZoneInfo

    zone_map = _zone_map(conn, entity)
    for zone in {*zone_map.values(), *([endpoint.default_zone] if endpoint.default_zone else [])}:
        ZoneInfo(zone)  # an unknown zone fails here, naming it
    default = endpoint.default_zone
    if default is None and len(set(zone_map.values())) == 1:
        default = next(iter(zone_map.values()))
    by_zone: dict[str, list[str]] = {}
    if zone_key != "*":
        for key, zone in sorted(zone_map.items()):
            by_zone.setdefault(zone, []).append(key)
    if default is None:
        if zone_key == "*" or not by_zone:
            raise SourceConfigError(
                f"{endpoint.conn_id}: {entity.endpoint} holds local times but the database "
                f"names several zones ({sorted(set(zone_map.values()))}) and no default; set "
                f"extra.timezone on connection {endpoint.conn_id!r}")
        log.warning("%s: rows of %s with an unknown %s are not read (no default zone)",
                    endpoint.conn_id, entity.endpoint, zone_key)
    groups = [(zone, keys, zone == default) for zone, keys in sorted(by_zone.items())]
    if default is not None and default not in by_zone:
        groups.append((default, [], True))
    return groups


def local_bounds(start: datetime, end: datetime, zone: str) -> tuple[datetime, datetime]:
    """A local wall-clock range `[lo, hi)` that holds every local time whose instant in `zone`
    lies in `[start, end)`: the window shifted by the smallest and largest UTC offset the zone
    uses around it (so the index range is tight; the exact test is done in SQL)."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    offsets = set()
    probe = start - timedelta(hours=26)
    while probe <= end + timedelta(hours=26):
        offsets.add(probe.astimezone(tz).utcoffset())
        probe += timedelta(hours=1)
    utc_start = start.astimezone(UTC).replace(tzinfo=None)
    utc_end = end.astimezone(UTC).replace(tzinfo=None)
    return utc_start + min(offsets), utc_end + max(offsets)


def _date_scope(endpoint: SqlEndpoint, entity, window) -> tuple[date, date, dict[date, str]]:
    """The local dates a date-window run owns: from `late_days` before the window's first date
    to its last, in any zone on earth (UTC-12 … UTC+14), so no zone lookup is needed; each with
    its `_source` label."""
    date_column = entity.option("date_column")
    if not date_column or entity.cursor is not None:
        raise SourceConfigError(f"{entity.name}: date_window needs date_column and no cursor")
    late_days = int(entity.option("late_days", "1"))
    first = (window.start.astimezone(UTC) - timedelta(hours=12)).date()
    first -= timedelta(days=late_days)
    last = (window.end.astimezone(UTC) - timedelta(microseconds=1)
            + timedelta(hours=14)).date()
    labels = {}
    day = first
    while day <= last:
        labels[day] = f"{endpoint.conn_id}:{entity.endpoint} {date_column}={day.isoformat()}"
        day += timedelta(days=1)
    return first, last, labels


def _date_window_query(endpoint: SqlEndpoint, entity, window) -> Query:
    """Every row dated in the run's date scope; each record labelled with its date."""
    from psycopg import sql

    first, last, labels = _date_scope(endpoint, entity, window)
    date_column = entity.option("date_column")
    col = sql.Identifier(date_column)
    statement = sql.SQL(
        "select t.* from {table} t where t.{col} >= %(first)s and t.{col} <= %(last)s"
    ).format(table=_table(entity), col=col)
    label, _replace = describe(endpoint, entity, window)
    return Query(statement=statement, params={"first": first, "last": last}, label=label,
                 replace_sources=list(labels.values()), date_labels=labels,
                 date_column=date_column)


MAX_IDLE_CONNECTIONS = 8
_idle_connections: dict[str, list] = {}
_idle_lock = threading.Lock()


@contextmanager
def source_connection(endpoint: SqlEndpoint, application_name: str = "sfdp-extract"):
    """A read-only, repeatable-read connection to the source. A process that reads many windows
    (a backfill loop, the tests) reuses idle ones instead of paying a new login each time; one
    that failed is closed, never reused."""
    import psycopg

    conn = None
    with _idle_lock:
        idle = _idle_connections.get(endpoint.dsn, [])
        while idle and conn is None:
            candidate = idle.pop()
            if not (candidate.closed or candidate.broken):
                conn = candidate
    if conn is None:
        conn = psycopg.connect(endpoint.dsn, application_name=application_name)
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        yield conn
        conn.rollback()  # end the read-only transaction: nothing to keep
    except BaseException:
        conn.close()
        raise
    with _idle_lock:
        idle = _idle_connections.setdefault(endpoint.dsn, [])
        if len(idle) < MAX_IDLE_CONNECTIONS:
            idle.append(conn)
            return
    conn.close()


@atexit.register
def close_idle_connections() -> None:
    """Close every idle source connection (at exit, or when a caller wants a clean slate)."""
    with _idle_lock:
        connections = [c for idle in _idle_connections.values() for c in idle]
        _idle_connections.clear()
    for conn in connections:
        conn.close()


def stream_records(endpoint: SqlEndpoint, entity, window, *, page_size: int = 500,
                   application_name: str = "sfdp-extract") -> Iterator[SourceRecord]:
    """Yield the window's rows as records, fetched `page_size` at a time through a named cursor
    in one read-only transaction (the connection is taken only when the load starts reading;
    the zone lookup and the read see the same snapshot of the source)."""
    with source_connection(endpoint, application_name) as conn:
        query = build_query(conn, endpoint, entity, window)
        with conn.cursor(name=f"sfdp_{entity.name}") as cursor:
            cursor.itersize = page_size
            cursor.execute(query.statement, query.params)
            names = [column.name for column in cursor.description]
            _check_columns(endpoint, entity, names)
            key_positions = [names.index(k) for k in entity.natural_key if k in names]
            date_position = names.index(query.date_column) if query.date_column else None
            while rows := cursor.fetchmany(page_size):
                for row in rows:
                    ref = "|".join("" if row[i] is None else str(row[i]) for i in key_positions)
                    source = query.label
                    if date_position is not None:
                        source = query.date_labels.get(row[date_position], query.label)
                    yield SourceRecord(source=source, record_ref=ref or "?",
                                       payload=dict(zip(names, row)))


def _check_columns(endpoint: SqlEndpoint, entity, names: list[str]) -> None:
    """A missing required column fails clearly; a missing optional one is logged (lands null);
    an undeclared new column is kept by the loader in `_extra` and recorded as drift."""
    present = set(names)
    missing_required = [f.name for f in entity.fields if f.required and f.name not in present]
    if missing_required:
        raise SourceSchemaError(
            f"{endpoint.conn_id}: {entity.endpoint} has no column(s) {missing_required} that "
            f"the registry declares required for {entity.name}")
    missing = [f.name for f in entity.fields if f.name not in present]
    if missing:
        log.warning("%s: %s lacks optional column(s) %s; they land as null",
                    endpoint.conn_id, entity.endpoint, missing)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
