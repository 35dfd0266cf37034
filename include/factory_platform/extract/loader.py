"""Interval loads that a retry cannot double: an interval is replaced whole, in one transaction.

Records stream into a temporary table with COPY (constant memory); then, in one transaction,
the target's rows of this batch's scope are deleted, the distinct new rows inserted, the
rejected records written to `ops.quarantine` and the batch recorded in `ops.load_audit`.
The batch id is derived from system, entity and window, so a re-run replaces its own audit and
quarantine rows as well as its data.

File drops (an `Extraction` with `replace_sources`) are scoped by file, not by window
(`_load_file_batch`): the batch replaces the raw rows *and* the quarantine rows of exactly the
files it read, so a file picked up again by a later window's lookback, a re-run or a backfill
lands once. Two additions serve them:

* `Extraction.set_aside` — files quarantined whole (cut off, unreadable): every line goes to
  `ops.quarantine` with the file's reason and counts as read and quarantined; they do not count
  towards the reject threshold, which is about bad records in readable files.
* `Extraction.delimited_files` — the **historian fast path** for large delimited exports. The
  entity is stored normalised: `raw_<system>.<entity>__rows` (the declared columns, `_extra`,
  `_file_id`; NOT NULL on required fields and CHECK on minimums, so the table itself validates)
  and `raw_<system>.<entity>__files` (one row per loaded file: `_source`, batch id, extraction
  time, interval), joined by the view `raw_<system>.<entity>`, which has the same columns as
  every other raw table. Each file's bytes are COPYed (server-side parse and cast, streamed in
  1 MiB chunks, constant memory) straight into `__rows`, with `;<file_id>` appended per line —
  the per-row batch metadata would otherwise triple the row width and halve the load rate.
  `__rows` is range-partitioned by `_file_id` (`FILES_PER_PARTITION` files each, `_row_tables`)
  and has no index: a reload finds a file's rows by pruning to its partition, and the COPY
  goes straight into the partition with no per-row index upkeep (a BRIN index on `_file_id`
  cost a fifth of the load time and found nothing until vacuum had summarised the new pages).
  A file loaded again keeps its id, so its rows go back to its partition.
  Each file runs under a savepoint: when Postgres refuses it (a bad value, a wrong field count,
  a required field empty, an undeclared column), the savepoint is rolled back and that file
  alone is read again record by record (`DelimitedFile.records`), so every bad line lands in
  `ops.quarantine` with its line number and reason and the good ones load. Natural-key
  duplicates inside a file are not searched for on this path (staging deduplicates); duplicate
  *files* are skipped by the client (checksum) and counted in `duplicates_skipped`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any

from factory_platform.extract import incidents
from factory_platform.extract.fields import Field, RecordRejected, parse_record
from factory_platform.extract.incidents import Incident, RefusedAnswer
from factory_platform.warehouse import ensure_warehouse_once

log = logging.getLogger(__name__)

METADATA_COLUMNS = (
    ("_extra", "jsonb"),
    ("_batch_id", "text not null"),
    ("_extracted_at", "timestamptz not null"),
    ("_source", "text not null"),
    ("_interval_start", "timestamptz not null"),
    ("_interval_end", "timestamptz not null"),
)


@dataclass(frozen=True)
class SourceRecord:
    """One record as delivered: where it came from (page or file, row or id) and its fields."""

    source: str
    record_ref: str
    payload: dict[str, Any]
    raw_text: str | None = None


@dataclass
class Extraction:
    """What a client delivers for one batch. `rejected` and `duplicates` may grow while
    `records` is being iterated (a malformed file, a file delivered twice)."""

    records: Iterable[SourceRecord]
    source_label: str
    replace_sources: list[str] | None = None  # file drops: replace rows of these files
    rejected: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    duplicates: int = 0
    on_committed: Callable[[], None] | None = None  # e.g. move files to the archive
    # File drops only (used when `replace_sources` is set; see the module docstring):
    set_aside: list[SetAsideFile] = field(default_factory=list)
    delimited_files: list[DelimitedFile] | None = None  # historian fast path
    # What the operator must see beyond bad records (files waiting, set aside, late, …):
    # written to ops.source_incident in the batch's transaction (see `incidents`).
    incidents: list[Incident] = field(default_factory=list)
    # Late files: the earliest period this batch loads, when it lies before the window. The
    # audit records it as the batch's window_start, so the transform re-processes that period.
    covers_from: datetime | None = None
    # False (REST change feeds): an answer with no records for a window where raw holds rows
    # is refused (`EmptyAnswerRefused`), not applied as a deletion of those rows.
    empty_is_deletion: bool = True
    # File drops: a file over the reject threshold is set aside alone; called after the commit
    # with (file name, reason) to move it to the quarantine folder.
    on_file_rejected: Callable[[str, str], None] | None = None


@dataclass(frozen=True)
class SetAsideFile:
    """A delivered file quarantined whole: each of its lines is recorded with `reason`."""

    name: str  # the quarantine rows' `source`; a broken re-delivery uses its own name here
    path: str
    reason: str
    encoding: str = "utf-8"
    per_line: bool = True  # False: one quarantine row for the whole file (e.g. broken XML)
    header_lines: int = 1
    # Payloads are cut to this many bytes (a line of 256 MiB is recorded, not copied whole).
    max_payload_bytes: int = 64 * 1024
    # False: the file is not read at all (a link, device or directory — never followed): one
    # quarantine row naming it, with no payload.
    readable: bool = True
    # line ref → its own reason, for a file set aside for too many bad lines
    line_reasons: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class DelimitedFile:
    """A delimited text file for the fast path: its bytes after the header go to COPY as-is.

    `records(rejected)` reads the same file record by record (rejected lines appended to the
    list as (source, ref, reason, payload)); the loader falls back to it for a file that
    Postgres refuses, or one with undeclared columns."""

    name: str
    path: str
    columns: tuple[str, ...]
    data_offset: int
    records: Callable[[list], Iterable[SourceRecord]]
    encoding: str = "utf-8"
    delimiter: str = ";"
    crlf: bool = False
    # A line longer than this is not COPYed: the file falls back to `records`, whose reader
    # quarantines the long line (checked while streaming: linear time, bounded memory).
    max_record_bytes: int = 1 << 20


@dataclass(frozen=True)
class LoadTarget:
    """Where a batch lands and which existing rows it replaces."""

    system: str
    entity: str
    fields: tuple[Field, ...]
    natural_key: tuple[str, ...]
    replace_column: str | None  # rows whose value falls in the window are replaced …
    max_reject_share: float = 0.05

    @property
    def table(self) -> str:
        return f"raw_{self.system}.{self.entity}"


@dataclass
class LoadResult:
    batch_id: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    duplicates_skipped: int = 0
    rows_replaced: int = 0
    new_columns: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    files_rejected: dict[str, str] = field(default_factory=dict)  # file drops: name → reason


class LoadRejected(RuntimeError):
    """Too large a share of a batch was rejected: the batch did not load."""


class EmptyAnswerRefused(RefusedAnswer):
    """The source answered no records for a window where raw holds rows, and the source does
    not declare that an empty window means deletion: nothing was replaced."""


class IncompleteAnswerRefused(EmptyAnswerRefused):
    """A change feed's answer lacks versions raw already holds for the window (a page came back
    empty or cut short): nothing was replaced."""


def batch_id_for(system: str, entity: str, window_start: datetime, window_end: datetime) -> str:
    return f"{system}.{entity}:{window_start.isoformat()}/{window_end.isoformat()}"


def raw_table_ready(conn, target: LoadTarget) -> bool:
    """One catalog look: the raw table exists with every declared column (and its index)."""
    have = conn.execute(
        "select coalesce(array_agg(attname::text), '{}') from pg_attribute "
        "where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped",
        (target.table,),
    ).fetchone()[0]
    return {f.name for f in target.fields} | {"_batch_id"} <= set(have)


def ensure_raw_table(conn, target: LoadTarget) -> None:
    """Create the raw table (and its window index), or add newly declared columns."""
    if raw_table_ready(conn, target):
        return
    columns = [f'"{f.name}" {f.pg_type}' for f in target.fields]
    columns += [f"{name} {ddl}" for name, ddl in METADATA_COLUMNS]
    conn.execute(f"create schema if not exists raw_{target.system}")
    conn.execute(f"create table if not exists {target.table} ({', '.join(columns)})")
    if target.replace_column:
        conn.execute(
            f"create index if not exists {target.entity}_{target.replace_column}_idx "
            f'on {target.table} ("{target.replace_column}")'
        )
    existing = {
        row[0] for row in conn.execute(
            "select column_name from information_schema.columns "
            "where table_schema = %s and table_name = %s",
            (f"raw_{target.system}", target.entity),
        )
    }
    for f in target.fields:
        if f.name not in existing:
            conn.execute(f'alter table {target.table} add column "{f.name}" {f.pg_type}')


def load_batch(
    dsn: str,
    target: LoadTarget,
    extraction: Extraction,
    *,
    interval_start: datetime,
    interval_end: datetime,
    window_start: datetime,
    run_id: str | None = None,
    watermark: str = "advance",
) -> LoadResult:
    """Load one batch: replace the target rows of [window_start, interval_end) (or of the
    extraction's `replace_sources`, for file drops) with the distinct valid records;
    quarantine the rest. Calls the extraction's `on_committed` after the commit.

    `watermark` (see `record_watermark`): "advance" moves the entity's high-water mark to
    `interval_end` when the batch starts at or before it; "start" also creates a missing mark
    (a scheduled run); "keep" leaves it alone (a snapshot has no time position)."""
    load = _load_file_batch if extraction.replace_sources is not None else _load_batch
    result = load(dsn, target, extraction, interval_start=interval_start,
                  interval_end=interval_end, window_start=window_start, run_id=run_id,
                  watermark=watermark)
    if extraction.on_committed:
        extraction.on_committed()
    if extraction.on_file_rejected:
        for name, reason in result.files_rejected.items():
            extraction.on_file_rejected(name, reason)
    return result


def _load_batch(dsn, target, extraction, *, interval_start, interval_end, window_start,
                run_id, watermark) -> LoadResult:
    import psycopg

    source_label = extraction.source_label
    replace_sources = extraction.replace_sources
    ensure_warehouse_once(dsn)
    batch_id = batch_id_for(target.system, target.entity, window_start, interval_end)
    result = LoadResult(batch_id=batch_id)
    started_at = datetime.now(UTC)
    quarantined: list[tuple[str, str, str, str | None]] = []
    extra_columns: dict[str, None] = {}
    column_names = [f.name for f in target.fields]
    copy_columns = ", ".join([f'"{c}"' for c in column_names] + ["_extra", "_source"])
    audit = partial(_record_audit, target=target, result=result, interval_start=interval_start,
                    interval_end=interval_end,
                    window_start=min(window_start, extraction.covers_from or window_start),
                    source_label=source_label, run_id=run_id, started_at=started_at)

    with psycopg.connect(dsn) as conn:
        ensure_raw_table(conn, target)
        conn.commit()
        # One load per table at a time: overlapping windows (lookback, backfills running in
        # parallel) must not interleave their delete and insert.
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (target.table,))
        conn.execute(
            f"create temp table _incoming on commit drop as select * from {target.table} with no data"
        )
        copy = GuardedCopy(conn, f"copy _incoming ({copy_columns}) from stdin", quarantined)
        for record in extraction.records:
            result.rows_read += 1
            row = _parsed_row(record, target, quarantined, extra_columns)
            if row is not None:
                copy.add(record, [*row, record.source])
        copy.flush()
        quarantined.extend(extraction.rejected)
        result.rows_read += len(extraction.rejected)
        result.rows_quarantined = len(quarantined)
        result.reasons = [f"{src} {ref}: {reason}" for src, ref, reason, _ in quarantined[:5]]
        rejection = _too_many_rejected(target, result, source_label)
        if rejection:
            # Nothing of the batch loads; its rejected records are still kept and counted.
            conn.rollback()
            _write_quarantine(conn, batch_id, target, quarantined)
            result.rows_loaded = 0
            audit(conn, status="rejected")
            conn.commit()
            raise LoadRejected(rejection)
        if (result.rows_read == 0 and not extraction.empty_is_deletion and replace_sources is None
                and _window_holds_rows(conn, target, window_start, interval_end)):
            conn.rollback()
            audit(conn, status="refused")
            conn.commit()
            raise EmptyAnswerRefused(
                f"{target.system}.{target.entity} from {source_label}: the source answered no "
                f"records for [{window_start.isoformat()}, {interval_end.isoformat()}), where "
                f"{target.table} holds rows; an empty answer is not applied as a deletion "
                "(the source does not declare empty_window_deletes). Nothing was replaced.")

        key = ", ".join(f'"{c}"' for c in target.natural_key)
        cursor_order = f', "{target.replace_column}" desc' if target.replace_column else ""
        distinct_rows = conn.execute(
            f"create temp table _distinct on commit drop as "
            f"select distinct on ({key}{', ' + _q(target.replace_column) if target.replace_column else ''}) * "
            f"from _incoming order by {key}{cursor_order}"
        ).rowcount
        if not extraction.empty_is_deletion and replace_sources is None and target.replace_column:
            # A change feed never drops a version: an answer lacking versions raw holds for the
            # window (a page that came back empty or cut short) must not delete them.
            missing = _versions_missing(conn, target, key, window_start, interval_end)
            if missing:
                conn.rollback()
                audit(conn, status="refused")
                conn.commit()
                raise IncompleteAnswerRefused(
                    f"{target.system}.{target.entity} from {source_label}: the answer for "
                    f"[{window_start.isoformat()}, {interval_end.isoformat()}) lacks {missing} "
                    f"version(s) {target.table} holds for that window (read {result.rows_read}); "
                    "a change feed never drops a version, so the answer is refused, not applied "
                    "as a deletion. Nothing was replaced.")
        result.duplicates_skipped = (result.rows_read - result.rows_quarantined) - distinct_rows
        result.rows_read += extraction.duplicates
        result.duplicates_skipped += extraction.duplicates

        if replace_sources is not None:
            replace_sources = list(replace_sources)
            deleted = conn.execute(
                f"delete from {target.table} where _source = any(%s)", (replace_sources,)
            )
        else:
            deleted = conn.execute(
                f'delete from {target.table} where "{target.replace_column}" >= %s '
                f'and "{target.replace_column}" < %s',
                (window_start, interval_end),
            )
        result.rows_replaced = deleted.rowcount
        all_columns = ", ".join([f'"{c}"' for c in column_names] + ["_extra", "_source"])
        inserted = conn.execute(
            f"insert into {target.table} ({all_columns}, _batch_id, _extracted_at, "
            f"_interval_start, _interval_end) "
            f"select {all_columns}, %s, %s, %s, %s from _distinct",
            (batch_id, started_at, interval_start, interval_end),
        )
        result.rows_loaded = inserted.rowcount

        _write_quarantine(conn, batch_id, target, quarantined)
        _record_drift(conn, target, extra_columns, batch_id, result)
        incidents.resolve(conn, target.system, target.entity, incidents.CLEARED_BY_A_LOAD)
        incidents.record(conn, target.system, target.entity, extraction.incidents, batch_id)
        record_watermark(conn, target, interval_start, interval_end, batch_id, watermark)
        audit(conn)  # last: its finished_at is (within milliseconds) the commit time
    if result.new_columns:
        log.warning("%s: undeclared columns kept in _extra: %s", target.table, result.new_columns)
    return result


def _window_holds_rows(conn, target: LoadTarget, start: datetime, end: datetime) -> bool:
    if not target.replace_column:
        return conn.execute(f"select exists (select from {target.table})").fetchone()[0]
    return conn.execute(
        f'select exists (select from {target.table} where "{target.replace_column}" >= %s '
        f'and "{target.replace_column}" < %s)', (start, end)).fetchone()[0]


def _versions_missing(conn, target: LoadTarget, key: str, start: datetime,
                      end: datetime) -> int:
    """Versions (natural key + cursor) raw holds in [start, end) that the batch lacks."""
    cursor = _q(target.replace_column)
    return conn.execute(
        f"select count(*) from {target.table} t where t.{cursor} >= %s and t.{cursor} < %s "
        f"and not exists (select from _distinct d where (d.{cursor}, "
        + ", ".join(f"d.{c}" for c in key.split(", "))
        + f") = (t.{cursor}, " + ", ".join(f"t.{c}" for c in key.split(", ")) + "))",
        (start, end)).fetchone()[0]


def _record_drift(conn, target: LoadTarget, extra_columns, batch_id: str,
                  result: LoadResult) -> None:
    for name in extra_columns:
        conn.execute(
            "insert into ops.schema_drift (system, entity, column_name, first_batch_id) "
            "values (%s, %s, %s, %s) on conflict do nothing",
            (target.system, target.entity, name, batch_id),
        )
    result.new_columns = list(extra_columns)


def record_watermark(conn, target: LoadTarget, interval_start: datetime,
                     interval_end: datetime, batch_id: str, mode: str = "advance") -> None:
    """Move the entity's high-water mark (`ops.extract_watermark`: everything before
    `loaded_upto` was loaded and committed) to `interval_end`, in the batch's transaction —
    but only over time it covers without a gap (the batch starts at or before the mark), so
    a backfill of old days never moves it and an outage's gap is never skipped. "start"
    also creates a missing mark (a scheduled run); "keep" changes nothing."""
    if mode == "keep":
        return
    if mode not in ("advance", "start"):
        raise ValueError(f"watermark mode {mode!r}: advance, start or keep")
    moved = conn.execute(
        "update ops.extract_watermark set loaded_upto = %s, batch_id = %s, "
        "updated_at = clock_timestamp() where system = %s and entity = %s "
        "and loaded_upto >= %s and loaded_upto < %s",
        (interval_end, batch_id, target.system, target.entity, interval_start, interval_end),
    ).rowcount
    if not moved and mode == "start":
        conn.execute(
            "insert into ops.extract_watermark (system, entity, loaded_upto, batch_id) "
            "values (%s, %s, %s, %s) on conflict (system, entity) do nothing",
            (target.system, target.entity, interval_end, batch_id))


def _q(name: str | None) -> str:
    return f'"{name}"'


def _parsed_row(record: SourceRecord, target: LoadTarget, quarantined: list,
                extra_columns: dict[str, None]) -> list[Any] | None:
    """The record's declared values plus its `_extra` JSON, ready for COPY; or None after
    putting it in `quarantined` with the reason it cannot load."""
    try:
        values, extras = parse_record(record.payload, target.fields)
    except RecordRejected as exc:
        quarantined.append((record.source, record.record_ref, str(exc),
                            record.raw_text or _payload_text(record.payload)))
        return None
    for name in extras:
        extra_columns.setdefault(name)
    return [*values, json.dumps(extras, ensure_ascii=False, default=str) if extras else None]


def _payload_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, default=str)


def _write_quarantine(conn, batch_id: str, target: LoadTarget, quarantined) -> None:
    """Replace this batch's quarantine rows (a re-run of the batch re-quarantines, once)."""
    conn.execute("delete from ops.quarantine where batch_id = %s", (batch_id,))
    with conn.cursor().copy(
        "copy ops.quarantine (batch_id, system, entity, source, record_ref, reason, "
        "raw_payload) from stdin"
    ) as copy:
        for src, ref, reason, payload in quarantined:
            copy.write_row([batch_id, target.system, target.entity, storable(src, 500),
                            storable(ref, 500), storable(reason, 2000), storable(payload)])


def _too_many_rejected(target: LoadTarget, result: LoadResult, source_label: str) -> str | None:
    """The failure message when the rejected share passes the source's threshold."""
    if not result.rows_read:
        return None
    share = result.rows_quarantined / result.rows_read
    if share <= target.max_reject_share:
        return None
    return (
        f"{target.system}.{target.entity} from {source_label}: {result.rows_quarantined} of "
        f"{result.rows_read} records rejected ({share:.0%} > allowed "
        f"{target.max_reject_share:.0%}); nothing loaded, the rejected records are in "
        f"ops.quarantine (batch {result.batch_id}). First reasons: " + "; ".join(result.reasons)
    )


def _record_audit(conn, *, target, result, interval_start, interval_end, window_start,
                  source_label, run_id, started_at, status: str = "loaded") -> None:
    """The batch's audit row. `finished_at` is `clock_timestamp()`, and this is the batch
    transaction's last statement, so it is the commit time to within milliseconds (`now()`
    would be the transaction's start: a long load would look older than it is, and the
    transform, which takes the batches finished since its last run, could miss it)."""
    conn.execute(
        """
        insert into ops.load_audit (batch_id, system, entity, interval_start, interval_end,
            window_start, source, rows_read, rows_loaded, rows_quarantined, duplicates_skipped,
            rows_replaced, run_id, started_at, finished_at, status)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp(), %s)
        on conflict (batch_id) do update set
            source = excluded.source, window_start = excluded.window_start,
            rows_read = excluded.rows_read,
            rows_loaded = excluded.rows_loaded, rows_quarantined = excluded.rows_quarantined,
            duplicates_skipped = excluded.duplicates_skipped,
            rows_replaced = excluded.rows_replaced, run_id = excluded.run_id,
            started_at = excluded.started_at, finished_at = clock_timestamp(),
            status = excluded.status
        """,
        (result.batch_id, target.system, target.entity, interval_start, interval_end,
         window_start, source_label, result.rows_read, result.rows_loaded,
         result.rows_quarantined, result.duplicates_skipped, result.rows_replaced, run_id,
         started_at, status),
    )


# --- records the database refuses ---------------------------------------------------------------

GUARD_CHUNK_ROWS = 5000
QUARANTINE_PAYLOAD_BYTES = 64 * 1024


def storable(text: str | None, limit: int = QUARANTINE_PAYLOAD_BYTES) -> str | None:
    """A payload as ops.quarantine can hold it: NUL bytes and lone surrogates (which a text
    column refuses) escaped, cut to `limit` bytes with a note of the full length."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    data = text.encode("utf-8", "backslashreplace")
    if len(data) > limit:
        return (data[:limit].decode("utf-8", "ignore")
                + f" … [cut: {len(data)} bytes in all]")
    return data.decode("utf-8")


class GuardedCopy:
    """COPY rows in chunks, each under a savepoint. When Postgres refuses a chunk (a byte its
    encoding cannot hold, a value out of range, a constraint), the chunk is split in halves
    until the refused records are found: each goes to `quarantined` with the database's own
    reason, the rest load. One bad record costs about 2·log2(chunk) small COPYs, not the batch."""

    def __init__(self, conn, copy_sql: str, quarantined: list,
                 chunk_rows: int = GUARD_CHUNK_ROWS) -> None:
        self.conn, self.copy_sql, self.quarantined = conn, copy_sql, quarantined
        self.chunk_rows = chunk_rows
        self.pending: list[tuple[SourceRecord, list]] = []
        self.loaded = 0

    def add(self, record: SourceRecord, row: list) -> None:
        self.pending.append((record, row))
        if len(self.pending) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self._copy(self.pending)
            self.pending = []

    def _copy(self, rows: list[tuple[SourceRecord, list]]) -> None:
        import psycopg

        self.conn.execute("savepoint guarded_copy")
        try:
            with self.conn.cursor().copy(self.copy_sql) as copy:
                for _record, row in rows:
                    copy.write_row(row)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError,
                UnicodeEncodeError) as exc:
            self.conn.execute("rollback to savepoint guarded_copy")
            if len(rows) == 1:
                record = rows[0][0]
                self.quarantined.append((
                    record.source, record.record_ref,
                    f"refused by the database: {_database_reason(exc)}",
                    storable(record.raw_text or _payload_text(record.payload))))
                return
            middle = len(rows) // 2
            self._copy(rows[:middle])
            self._copy(rows[middle:])
            return
        self.conn.execute("release savepoint guarded_copy")
        self.loaded += len(rows)


def _database_reason(exc: Exception) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag else None
    if isinstance(exc, UnicodeEncodeError):
        return f"text that cannot be encoded as UTF-8 ({exc.reason})"
    return primary or str(exc).splitlines()[0]


# --- file drops: batches scoped by file (see the module docstring) -----------------------------

COPY_CHUNK_BYTES = 1 << 20
FILES_PER_PARTITION = 48  # two days of hourly files: what a reload of one file scans
_RANGE_BOUND = re.compile(r"FOR VALUES FROM \('?(\d+)'?\) TO \('?(\d+)'?\)")
_PG_ENCODINGS = {"utf8": None, "gb18030": "GB18030", "gbk": "GBK", "latin1": "LATIN1",
                 "iso88591": "LATIN1", "cp1252": "WIN1252", "windows1252": "WIN1252"}


def historian_tables(target: LoadTarget) -> tuple[str, str]:
    """The fast path's physical tables behind the view `target.table`: (rows, files)."""
    return f"{target.table}__rows", f"{target.table}__files"


def _load_file_batch(dsn, target, extraction, *, interval_start, interval_end, window_start,
                     run_id, watermark) -> LoadResult:
    """A file-drop batch: replace the raw rows of `replace_sources` and the quarantine rows of
    those files and of the files set aside. A file whose rejected share passes the source's
    threshold is set aside alone (`_reject_files`): the window's other files load."""
    import psycopg

    ensure_warehouse_once(dsn)
    batch_id = batch_id_for(target.system, target.entity, window_start, interval_end)
    result = LoadResult(batch_id=batch_id)
    started_at = datetime.now(UTC)
    sources = list(extraction.replace_sources or [])
    quarantined: list[tuple[str, str, str, str | None]] = []
    extra_columns: dict[str, None] = {}
    fast = extraction.delimited_files is not None
    stamp = (batch_id, started_at, interval_start, interval_end)
    set_aside = list(extraction.set_aside)

    with psycopg.connect(dsn) as conn:
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"ddl raw_{target.system}",))
        if fast:
            _ensure_historian_tables(conn, target)
        elif not _file_table_ready(conn, target):
            ensure_raw_table(conn, target)
            conn.execute(f"create index if not exists {target.entity}__source_idx "
                         f"on {target.table} (_source)")
        conn.commit()
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (target.table,))
        read_per_file: dict[str, int] = {}
        if not sources:
            pass  # no file in this window: only the audit row
        elif fast:
            file_ids = _copy_delimited_files(conn, target, extraction.delimited_files, sources,
                                             stamp, result, quarantined, extra_columns,
                                             read_per_file)
            quarantined.extend(extraction.rejected)
            for name, reason in _files_over_threshold(target, read_per_file, quarantined,
                                                      extraction.rejected).items():
                result.files_rejected[name] = reason
                result.rows_loaded -= _drop_historian_file(conn, target, file_ids[name])
                result.rows_read -= read_per_file[name]
                line_reasons = _line_reasons(quarantined, name)
                quarantined = [q for q in quarantined if q[0] != name]
                file = next(f for f in extraction.delimited_files if f.name == name)
                set_aside.append(SetAsideFile(name, file.path, reason, file.encoding,
                                              line_reasons=line_reasons))
        else:
            _insert_file_records(conn, target, extraction, sources, stamp, result,
                                 quarantined, extra_columns, read_per_file)
        if not fast:
            quarantined.extend(extraction.rejected)
        result.rows_read += len(extraction.rejected)
        result.rows_quarantined = len(quarantined)
        result.reasons = [f"{src} {ref}: {reason}" for src, ref, reason, _ in quarantined[:5]]
        result.rows_read += extraction.duplicates
        result.duplicates_skipped += extraction.duplicates
        _write_file_quarantine(conn, batch_id, target, sources, quarantined, set_aside, result)
        _record_drift(conn, target, extra_columns, batch_id, result)
        # Resolve first: an incident the client reports for this batch (a file that changed
        # while it was read) must stay open.
        settled = [name for name in sources if name not in result.files_rejected]
        settled += [f.name.split(" (re-delivery")[0] for f in set_aside]  # no longer waiting
        incidents.resolve(conn, target.system, target.entity, ("file_waiting",), settled)
        incidents.resolve(conn, target.system, target.entity, incidents.CLEARED_BY_A_LOAD)
        incidents.record(conn, target.system, target.entity, [
            *extraction.incidents,
            *(Incident("file_rejected", name, reason)
              for name, reason in result.files_rejected.items())], batch_id)
        record_watermark(conn, target, interval_start, interval_end, batch_id, watermark)
        _record_audit(conn, target=target, result=result, interval_start=interval_start,
                      interval_end=interval_end,
                      window_start=min(window_start, extraction.covers_from or window_start),
                      source_label=extraction.source_label, run_id=run_id,
                      started_at=started_at)
    if result.files_rejected:
        log.warning("%s: set aside whole: %s", target.table, "; ".join(
            f"{name}: {reason}" for name, reason in result.files_rejected.items()))
    if result.new_columns:
        log.warning("%s: undeclared columns kept in _extra: %s", target.table, result.new_columns)
    return result


def _files_over_threshold(target: LoadTarget, read_per_file: dict[str, int],
                          quarantined, client_rejected) -> dict[str, str]:
    """name → reason, for each file whose rejected share passes the source's threshold."""
    bad: dict[str, int] = {}
    for src, *_ in quarantined:
        bad[src] = bad.get(src, 0) + 1
    read = dict(read_per_file)
    for src, *_ in client_rejected:
        read[src] = read.get(src, 0) + 1
    over = {}
    for name, total in read.items():
        share = bad.get(name, 0) / total if total else 0.0
        if share > target.max_reject_share:
            over[name] = (f"{bad[name]} of {total} records rejected ({share:.0%} > allowed "
                          f"{target.max_reject_share:.0%}): the file is set aside whole, the "
                          "window's other files loaded")
    return over


def _line_reasons(rejected, name: str) -> dict[str, str]:
    return {ref: reason for src, ref, reason, _ in rejected if src == name}


def _drop_historian_file(conn, target: LoadTarget, file_id: int) -> int:
    """Remove a rejected file's rows and its file row from the fast path's tables."""
    rows_table, files_table = historian_tables(target)
    dropped = conn.execute(f"delete from {rows_table} where _file_id = %s", (file_id,)).rowcount
    conn.execute(f"delete from {files_table} where file_id = %s", (file_id,))
    return dropped


def _insert_file_records(conn, target, extraction, sources, stamp, result, quarantined,
                         extra_columns, read_per_file) -> None:
    """Row path: parse each record, COPY into a temp table (refused records quarantined), set
    aside whole the files over the reject threshold, then replace the files' rows."""
    column_names = [f.name for f in target.fields]
    all_columns = ", ".join([f'"{c}"' for c in column_names] + ["_extra", "_source"])
    conn.execute(
        f"create temp table _incoming on commit drop as select * from {target.table} with no data"
    )
    conn.execute("alter table _incoming add column _record_ref text")
    copy = GuardedCopy(conn, f"copy _incoming ({all_columns}, _record_ref) from stdin",
                       quarantined)
    for record in extraction.records:
        result.rows_read += 1
        read_per_file[record.source] = read_per_file.get(record.source, 0) + 1
        row = _parsed_row(record, target, quarantined, extra_columns)
        if row is not None:
            copy.add(record, [*row, record.source, record.record_ref])
    copy.flush()
    over = _files_over_threshold(target, read_per_file, quarantined, extraction.rejected)
    for name, reason in over.items():
        # Its good records go to quarantine too, with the file's reason; its bad ones keep
        # their own reason, with the file's appended.
        result.files_rejected[name] = reason
        for index, (src, ref, own, payload) in enumerate(quarantined):
            if src == name:
                quarantined[index] = (src, ref, f"{own} — {reason}", payload)
        held = conn.execute(
            "delete from _incoming where _source = %s returning _record_ref, "
            "row_to_json(_incoming)::text", (name,)).fetchall()
        quarantined.extend((name, ref, f"valid, but {reason}", payload) for ref, payload in held)
    key = ", ".join(f'"{c}"' for c in target.natural_key)
    deleted = conn.execute(f"delete from {target.table} where _source = any(%s)", (sources,))
    result.rows_replaced = deleted.rowcount
    result.rows_loaded = conn.execute(
        f"insert into {target.table} ({all_columns}, _batch_id, _extracted_at, "
        f"_interval_start, _interval_end) select distinct on ({key}) {all_columns}, "
        f"%s, %s, %s, %s from _incoming order by {key}, _source",
        stamp,
    ).rowcount
    result.duplicates_skipped = (result.rows_read - len(quarantined)) - result.rows_loaded


def _file_table_ready(conn, target: LoadTarget) -> bool:
    """One quick catalog look: the raw table has every declared column and its `_source` index."""
    have = conn.execute(
        "select coalesce(array_agg(attname::text), '{}'), "
        "to_regclass(%s) is not null from pg_attribute "
        "where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped",
        (f"raw_{target.system}.{target.entity}__source_idx", target.table),
    ).fetchone()
    return have[1] and {f.name for f in target.fields} <= set(have[0])


def _ensure_historian_tables(conn, target: LoadTarget) -> None:
    """Create `<entity>__rows`, `<entity>__files` and the view `<entity>` joining them (one
    catalog look when they are in place, as on every load after the first)."""
    rows_table, files_table = historian_tables(target)
    schema = f"raw_{target.system}"
    # the file id last: incremental models bound their scans by it (file ids grow in load
    # order, and the row partitions are ranges of them)
    view_columns = [f.name for f in target.fields] + [name for name, _ in METADATA_COLUMNS] + [
        "_file_id"]
    kind, current, existing, indexed = conn.execute(
        "select (select relkind::text from pg_class where oid = to_regclass(%(view)s)), "
        "array(select attname::text from pg_attribute where attrelid = to_regclass(%(view)s) "
        "      and attnum > 0 and not attisdropped order by attnum), "
        "array(select attname::text from pg_attribute where attrelid = to_regclass(%(rows)s) "
        "      and attnum > 0 and not attisdropped), "
        "to_regclass(%(index)s) is not null",
        {"view": target.table, "rows": rows_table,
         "index": f"{schema}.{target.entity}__files_source_idx"},
    ).fetchone()
    if kind and kind != "v":
        raise RuntimeError(
            f"{target.table} exists as a table, but its entity loads by the historian fast path, "
            f"which keeps it as a view over {rows_table} and {files_table}; drop or rename it")
    if current == view_columns and indexed and {f.name for f in target.fields} <= set(existing):
        return
    conn.execute(f"create schema if not exists {schema}")
    conn.execute(
        f"create table if not exists {files_table} (file_id bigserial primary key, "
        "source text not null, batch_id text not null, extracted_at timestamptz not null, "
        "interval_start timestamptz not null, interval_end timestamptz not null, "
        "rows_loaded bigint)"
    )
    conn.execute(f"create index if not exists {target.entity}__files_source_idx "
                 f"on {files_table} (source)")
    columns = []
    for f in target.fields:
        ddl = f'"{f.name}" {f.pg_type}' + (" not null" if f.required else "")
        if f.minimum is not None:
            ddl += f' check ("{f.name}" >= {int(f.minimum)})'
        columns.append(ddl)
    # Partitioned by file id (`_row_tables`): a reload finds a file's rows by pruning to one
    # partition, with no index to maintain per row. (A table made before keeps its BRIN index.)
    conn.execute(f"create table if not exists {rows_table} ({', '.join(columns)}, "
                 "_extra jsonb, _file_id bigint not null) partition by range (_file_id)")
    for f in target.fields:
        if existing and f.name not in existing:  # a field declared since the table was made
            conn.execute(f'alter table {rows_table} add column "{f.name}" {f.pg_type}')
    if current != view_columns:
        select_list = ", ".join(f'r."{f.name}"' for f in target.fields)
        conn.execute(
            f"create or replace view {target.table} as select {select_list}, r._extra, "
            "f.batch_id as _batch_id, f.extracted_at as _extracted_at, f.source as _source, "
            "f.interval_start as _interval_start, f.interval_end as _interval_end, "
            f"r._file_id from {rows_table} r join {files_table} f on f.file_id = r._file_id"
        )
        conn.execute(
            f"comment on view {target.table} is 'Loaded by the historian fast path: one row "
            f"per delivered record; batch metadata per file in {files_table}.'"
        )


def _copy_delimited_files(conn, target, files, sources, stamp, result, quarantined,
                          extra_columns, read_per_file) -> dict[str, int]:
    """Fast path: one COPY per partition for the batch's files; when Postgres refuses it, each
    file again under its own savepoint, and a file refused alone (or holding a quote or an
    over-long line) is read record by record. Returns file name → file id."""
    import psycopg

    rows_table, files_table = historian_tables(target)
    old = conn.execute(
        f"delete from {files_table} where source = any(%s) returning source, file_id",
        (sources,)).fetchall()
    if old:
        result.rows_replaced = conn.execute(
            f"delete from {rows_table} where _file_id = any(%s::bigint[])",
            ([file_id for _, file_id in old],)).rowcount
    if not files:
        return
    # A file loaded before keeps its id, so its rows go back to its partition (into the space
    # vacuum frees there) rather than leaving that partition half empty for good.
    kept_ids = dict(old)
    file_ids = dict(conn.execute(
        f"insert into {files_table} (file_id, source, batch_id, extracted_at, interval_start, "
        "interval_end) select coalesce(v.id, nextval(pg_get_serial_sequence(%s, 'file_id'))), "
        "v.name, %s, %s, %s, %s from unnest(%s::text[], %s::bigint[]) as v(name, id) "
        "returning source, file_id",
        (files_table, *stamp, [f.name for f in files], [kept_ids.get(f.name) for f in files]),
    ).fetchall())
    tables = _row_tables(conn, rows_table, file_ids.values())
    declared = {f.name for f in target.fields}
    copyable = [f for f in files
                if set(f.columns) <= declared and len(set(f.columns)) == len(f.columns)]
    loaded_by_copy: dict[str, int] = {}
    groups: dict[tuple, list[DelimitedFile]] = {}
    for file in copyable:
        key = (tables[file_ids[file.name]], file.columns, file.encoding, file.delimiter,
               file.crlf)
        groups.setdefault(key, []).append(file)
    for (table, *_), group in groups.items():
        if len(group) < 2:
            continue
        conn.execute("savepoint delimited_files")
        try:
            counts = _copy_bytes(conn, table, [(f, file_ids[f.name]) for f in group], csv=False)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError, _NotForCopy):
            conn.execute("rollback to savepoint delimited_files")
            continue
        conn.execute("release savepoint delimited_files")
        loaded_by_copy.update(counts)
    for file in files:
        file_id = file_ids[file.name]
        loaded = loaded_by_copy.get(file.name)
        if loaded is None and file in copyable:
            conn.execute("savepoint delimited_file")
            try:
                loaded = _copy_file_bytes(conn, tables[file_id], file, file_id)
                conn.execute("release savepoint delimited_file")
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError,
                    _NotForCopy) as exc:
                conn.execute("rollback to savepoint delimited_file")
                log.warning("%s: %s not taken by COPY (%s); reading it record by record",
                            target.table, file.name, str(exc).splitlines()[0])
        if loaded is None:
            read, loaded = _copy_file_records(conn, tables[file_id], target, file, file_id,
                                              quarantined, extra_columns)
        else:
            read = loaded
        result.rows_read += read
        result.rows_loaded += loaded
        read_per_file[file.name] = read
        loaded_by_copy[file.name] = loaded
    conn.execute(
        f"update {files_table} f set rows_loaded = v.n from unnest(%s::bigint[], %s::bigint[]) "
        "as v(id, n) where f.file_id = v.id",
        ([file_ids[f.name] for f in files], [loaded_by_copy[f.name] for f in files]))
    return file_ids


def _row_tables(conn, rows_table: str, file_ids: Iterable[int]) -> dict[int, str]:
    """file id → the table its rows are COPYed into: the partition of `rows_table` whose id
    range holds it, or a new one for [n·FILES_PER_PARTITION, (n+1)·FILES_PER_PARTITION) (cut
    to the free gap, so changing the constant never overlaps older ranges). A new partition is
    created standalone and attached, which takes SHARE UPDATE EXCLUSIVE on `rows_table`:
    readers and writers go on (`create table … partition of` would lock them out until the
    batch commits). A plain `rows_table` (made before the partitioning) is its own target."""
    kind, bounds = conn.execute(
        "select p.relkind::text, array(select array[c.oid::regclass::text, "
        "pg_get_expr(c.relpartbound, c.oid)] from pg_inherits i "
        "join pg_class c on c.oid = i.inhrelid where i.inhparent = p.oid) "
        "from pg_class p where p.oid = %s::regclass", (rows_table,)).fetchone()
    if kind != "p":
        return dict.fromkeys(file_ids, rows_table)
    ranges = [(int(m[1]), int(m[2]), name) for name, bound in bounds
              if (m := _RANGE_BOUND.fullmatch(bound))]
    tables: dict[int, str] = {}
    for file_id in sorted(set(file_ids)):
        table = next((name for low, high, name in ranges if low <= file_id < high), None)
        if table is None:
            start = file_id // FILES_PER_PARTITION * FILES_PER_PARTITION
            low = max([high for _, high, _ in ranges if high <= file_id] + [start])
            high = min([low_ for low_, _, _ in ranges if low_ > file_id]
                       + [start + FILES_PER_PARTITION])
            table = f"{rows_table}_from_{low}"
            conn.execute(f"create table {table} "
                         f"(like {rows_table} including defaults including constraints)")
            conn.execute(f"alter table {rows_table} attach partition {table} "
                         f"for values from ({low}) to ({high})")
            ranges.append((low, high, table))
        tables[file_id] = table
    return tables


class _NotForCopy(Exception):
    """The file's bytes cannot go to COPY as they are: read it record by record instead."""


class _Backslash(_NotForCopy):
    """COPY's text format would read a backslash as an escape: use the CSV format instead."""


def _copy_file_bytes(conn, rows_table: str, file: DelimitedFile, file_id: int) -> int:
    """COPY one file in text format (the fastest); a file with a backslash goes as CSV
    (no escapes; quote character \\x01, i.e. none), so every byte lands as delivered."""
    conn.execute("savepoint text_format")
    try:
        counts = _copy_bytes(conn, rows_table, [(file, file_id)], csv=False)
    except _Backslash:
        conn.execute("rollback to savepoint text_format")
        counts = _copy_bytes(conn, rows_table, [(file, file_id)], csv=True)
    else:
        conn.execute("release savepoint text_format")
    return counts[file.name]


def _copy_bytes(conn, table: str, parts: list[tuple[DelimitedFile, int]],
                csv: bool) -> dict[str, int]:
    """Stream the files' data lines (same columns and format) through one COPY, each line
    with `<delimiter><file_id>` appended; returns the rows per file.

    Linear in the file's size with memory bounded by one chunk plus one line: a line longer
    than the file's `max_record_bytes`, and a quote character (a quoted field may hold the
    delimiter or a line break, which only a CSV parser reads right), raise `_NotForCopy`, and
    the file is read record by record (`DelimitedFile.records`), where such a line is
    quarantined."""
    first = parts[0][0]
    options = ([f"format csv, delimiter '{first.delimiter}', quote E'\\x01', null ''"] if csv
               else [f"format text, delimiter '{first.delimiter}', null ''"])
    pg_encoding = _PG_ENCODINGS.get(first.encoding.lower().replace("-", "").replace("_", ""),
                                    first.encoding.upper())
    if pg_encoding:
        options.append(f"encoding '{pg_encoding}'")
    columns = ", ".join(f'"{c}"' for c in first.columns) + ", _file_id"
    line_end = b"\r\n" if first.crlf else b"\n"
    counts: dict[str, int] = {}
    cursor = conn.cursor()
    with cursor.copy(f"copy {table} ({columns}) from stdin ({', '.join(options)})") as copy:
        for file, file_id in parts:
            suffix = f"{file.delimiter}{file_id}".encode("ascii")
            tagged_end = suffix + line_end
            lines = 0
            with _open_regular(file.path) as fh:
                fh.seek(file.data_offset)
                pending = b""
                while chunk := fh.read(COPY_CHUNK_BYTES):
                    if not csv and b"\\" in chunk:
                        raise _Backslash
                    if b'"' in chunk:
                        raise _NotForCopy(f"{file.name} holds a quote character")
                    cut = chunk.rfind(b"\n") + 1
                    if not cut:  # no line end in this chunk: the line goes on
                        pending += chunk
                        if len(pending) > file.max_record_bytes:
                            raise _NotForCopy(f"{file.name} has a line over "
                                              f"{file.max_record_bytes} bytes")
                        continue
                    body = pending + chunk[:cut]
                    if (len(pending) + chunk.find(b"\n") > file.max_record_bytes
                            or _has_long_line(chunk[:cut], file.max_record_bytes)):
                        raise _NotForCopy(f"{file.name} has a line over "
                                          f"{file.max_record_bytes} bytes")
                    pending = chunk[cut:]
                    tagged = body.replace(line_end, tagged_end)
                    lines += (len(tagged) - len(body)) // len(suffix)  # no count() pass
                    copy.write(tagged)
                if pending.strip():
                    lines += 1
                    copy.write(pending + tagged_end)
            counts[file.name] = lines
    if sum(counts.values()) != cursor.rowcount:
        raise RuntimeError(f"{table}: COPY took {cursor.rowcount} rows, the files hold "
                           f"{sum(counts.values())} lines")
    return counts


@lru_cache(maxsize=16)
def _long_line(limit: int) -> re.Pattern[bytes]:
    return re.compile(rb"[^\n]{%d}" % (limit + 1))


def _has_long_line(data: bytes, limit: int) -> bool:
    """Whether a chunk holds a line over `limit` bytes (a C-speed scan; a chunk cannot hold a
    line longer than itself, so with the default limit nothing is scanned)."""
    return len(data) > limit and _long_line(limit).search(data) is not None


def _copy_file_records(conn, rows_table, target, file, file_id, quarantined,
                       extra_columns) -> tuple[int, int]:
    """Fallback for one file: parse record by record; good rows COPY, bad ones (and the ones
    the database refuses) quarantine."""
    names = [f.name for f in target.fields]
    columns = ", ".join([f'"{c}"' for c in names] + ["_extra", "_file_id"])
    refused: list[tuple[str, str, str, str | None]] = []
    read = 0
    copy = GuardedCopy(conn, f"copy {rows_table} ({columns}) from stdin", quarantined)
    for record in file.records(refused):
        read += 1
        row = _parsed_row(record, target, quarantined, extra_columns)
        if row is not None:
            copy.add(record, [*row, file_id])
    copy.flush()
    quarantined.extend(refused)
    return read + len(refused), copy.loaded


def _write_file_quarantine(conn, batch_id, target, sources, quarantined, set_aside,
                           result: LoadResult) -> None:
    """Replace the quarantine rows of the batch's files and set-aside files; record the
    set-aside files line by line (an unreadable one — a link, a device — by name only)."""
    conn.execute(
        "delete from ops.quarantine where system = %s and entity = %s and source = any(%s)",
        (target.system, target.entity, [*sources, *(f.name for f in set_aside)]),
    )
    with conn.cursor().copy(
        "copy ops.quarantine (batch_id, system, entity, source, record_ref, reason, "
        "raw_payload) from stdin"
    ) as copy:
        for src, ref, reason, payload in quarantined:
            copy.write_row([batch_id, target.system, target.entity, storable(src, 500),
                            storable(ref, 500), storable(reason, 2000), storable(payload)])
        for file in set_aside:
            for ref, payload in _set_aside_lines(file):
                reason = file.reason
                if ref in file.line_reasons:
                    reason = f"{file.line_reasons[ref]} — {file.reason}"
                copy.write_row([batch_id, target.system, target.entity, storable(file.name, 500),
                                ref, storable(reason, 2000),
                                storable(payload, file.max_payload_bytes)])
                result.rows_read += 1
                result.rows_quarantined += 1


def _open_regular(path: str):
    """Open a delivered file for reading without following a link, and only if it is a
    regular file (a file swapped for a link or a FIFO after the client checked it is refused)."""
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def _set_aside_lines(file: SetAsideFile) -> Iterable[tuple[str, str | None]]:
    """(record_ref, raw payload) of each data line of a set-aside file (or the whole file, or
    only its name when it must not be read). Lines are read with a bound: a line longer than
    the payload limit is kept cut, and the rest of it skipped, in constant memory."""
    if not file.readable:
        yield "file", None
        return
    with _open_regular(file.path) as fh:
        if not file.per_line:
            data = fh.read(file.max_payload_bytes + 1)
            text = data[:file.max_payload_bytes].decode(file.encoding, "replace")
            yield "file", text + (" … [cut]" if len(data) > file.max_payload_bytes else "")
            return
        number = 0
        while True:
            line = fh.readline(file.max_payload_bytes)
            if not line:
                return
            number += 1
            cut = not line.endswith(b"\n")
            if cut:  # skip the rest of an over-long line without holding it
                while (more := fh.readline(COPY_CHUNK_BYTES)) and not more.endswith(b"\n"):
                    pass
            if number > file.header_lines:
                text = line.rstrip(b"\r\n").decode(file.encoding, "replace")
                yield f"line {number}", text + (" … [cut]" if cut and more else "")
