"""One batch and the steps every load shares, each written once.

A `Batch` is one load of one entity: its target, the interval it owns, the window it read,
its id (derived from system, entity and window, so a re-run replaces its own audit and
quarantine rows as well as its data), its counts, the records it could not load and the
undeclared columns it met. Whatever the load's kind (`load.window`, `load.files`), its last
steps run in its transaction, in this order, through `Batch.finish`: the quarantine rows, the
schema drift, the source incidents, the high-water mark and, last, the audit row.

The reject-share check (`reject_share_over`) serves a whole batch (`Batch.rejection`) and a
single file of a file-drop batch (`load.files`). `GuardedCopy` COPYs records in chunks under
savepoints, so a record the database refuses is quarantined with the database's own reason
while the rest loads.

**Planner statistics after the commit** (`Batch.commit_and_analyze`). A freshly loaded raw
table has no statistics until autovacuum gets to it, and the transform's joins are planned
blind meanwhile (a year of history loaded into a fresh warehouse: `fct_machine_state_interval`
took ~160 s instead of ~2 s when Postgres joined the states to the shifts without them). So
every load — scheduled, catch-up, backfill, reload, file drop — ends with `ANALYZE` of the
tables it changed (recorded by the load kinds with `Batch.changed`) that autovacuum would
analyse now: never analysed, or rows changed since the last analysis (the server's count, this
batch's flushed into it first) over autovacuum's own threshold (`autovacuum_analyze_threshold`
+ `autovacuum_analyze_scale_factor` × rows). Only the decision is brought forward: a
micro-batch of a few rows into a large table costs one catalog look, not a sample of the
table. A partitioned parent (the historian's `__rows`) is analysed only when it never was:
its ANALYZE re-reads every partition (PG 15 has no `ANALYZE ONLY`), and autovacuum, which
never analyses a parent, keeps its partitions' statistics — each partition a load wrote is
analysed by the rule above. The loader owns the raw tables, which is all ANALYZE needs. An
ANALYZE that fails (a lock it waited for too long) is logged, never fails the committed batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from factory_platform.extract import incidents
from factory_platform.extract.incidents import Incident, RefusedAnswer
from factory_platform.extract.load.delivery import (
    Extraction,
    QuarantinedRecord,
    SetAsideFile,
    SourceRecord,
)
from factory_platform.fields import Field, RecordRejected, parse_record

log = logging.getLogger(__name__)

METADATA_COLUMNS = (
    ("_extra", "jsonb"),
    ("_batch_id", "text not null"),
    ("_extracted_at", "timestamptz not null"),
    ("_source", "text not null"),
    ("_interval_start", "timestamptz not null"),
    ("_interval_end", "timestamptz not null"),
)
WATERMARK_MODES = ("advance", "start", "keep")


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

    def columns(self, *more: str) -> str:
        """The declared columns (quoted), `_extra`, then `more`: a COPY or insert column list."""
        return ", ".join([f'"{f.name}"' for f in self.fields] + ["_extra", *more])


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


def reject_share_over(target: LoadTarget, rejected: int, read: int) -> float | None:
    """The rejected share of `read` records when it passes the source's threshold, else None."""
    if not read:
        return None
    share = rejected / read
    return share if share > target.max_reject_share else None


@dataclass
class Batch:
    """One load of one entity (see the module docstring). The load steps fill `result`,
    `quarantined` and `extra_columns`; `finish` writes them in the batch's transaction."""

    target: LoadTarget
    extraction: Extraction
    interval_start: datetime
    interval_end: datetime
    window_start: datetime
    run_id: str | None = None
    # the high-water mark (`record_watermark`): "advance", "start" or "keep"
    watermark: str = "advance"
    batch_id: str = field(init=False)
    started_at: datetime = field(init=False)
    result: LoadResult = field(init=False)
    quarantined: list[QuarantinedRecord] = field(default_factory=list)
    extra_columns: dict[str, None] = field(default_factory=dict)  # undeclared, in order met
    # tables this batch wrote → rows it inserted or deleted there (`commit_and_analyze`)
    changed_rows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.batch_id = batch_id_for(self.target.system, self.target.entity, self.window_start,
                                     self.interval_end)
        self.result = LoadResult(batch_id=self.batch_id)
        self.started_at = datetime.now(UTC)

    @property
    def stamp(self) -> tuple[str, datetime, datetime, datetime]:
        """The batch metadata of each row it loads: (_batch_id, _extracted_at,
        _interval_start, _interval_end)."""
        return self.batch_id, self.started_at, self.interval_start, self.interval_end

    def lock_target(self, conn) -> None:
        """One load per table at a time: overlapping windows (lookback, backfills running in
        parallel) must not interleave their delete and insert."""
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (self.target.table,))

    # --- records ------------------------------------------------------------------------------

    def parsed_row(self, record: SourceRecord) -> list[Any] | None:
        """The record's declared values plus its `_extra` JSON, ready for COPY; or None after
        quarantining it with the reason it cannot load."""
        try:
            values, extras = parse_record(record.payload, self.target.fields)
        except RecordRejected as exc:
            self.quarantined.append((record.source, record.record_ref, str(exc),
                                     record.raw_text or payload_text(record.payload)))
            return None
        for name in extras:
            self.extra_columns.setdefault(name)
        return [*values, json.dumps(extras, ensure_ascii=False, default=str) if extras else None]

    def copy_records(self, conn, copy_sql: str, records: Iterable[SourceRecord],
                     tail: Callable[[SourceRecord], list]) -> tuple[int, int]:
        """Parse each record and COPY its row, `tail(record)` appended, by `copy_sql` (records
        the parser or the database refuses are quarantined); returns (read, loaded)."""
        copy = GuardedCopy(conn, copy_sql, self.quarantined)
        read = 0
        for record in records:
            read += 1
            row = self.parsed_row(record)
            if row is not None:
                copy.add(record, [*row, *tail(record)])
        copy.flush()
        return read, copy.loaded

    def count_quarantined(self) -> None:
        """The quarantine count and the first reasons, from the records held so far."""
        self.result.rows_quarantined = len(self.quarantined)
        self.result.reasons = [f"{src} {ref}: {reason}"
                               for src, ref, reason, _ in self.quarantined[:5]]

    def count_duplicates(self) -> None:
        """Records the client skipped as already delivered count as read and as duplicates."""
        self.result.rows_read += self.extraction.duplicates
        self.result.duplicates_skipped += self.extraction.duplicates

    def rejection(self) -> str | None:
        """The failure message when the batch's rejected share passes the source's threshold."""
        target, result = self.target, self.result
        share = reject_share_over(target, result.rows_quarantined, result.rows_read)
        if share is None:
            return None
        return (
            f"{target.system}.{target.entity} from {self.extraction.source_label}: "
            f"{result.rows_quarantined} of {result.rows_read} records rejected ({share:.0%} > "
            f"allowed {target.max_reject_share:.0%}); nothing loaded, the rejected records are "
            f"in ops.quarantine (batch {result.batch_id}). First reasons: "
            + "; ".join(result.reasons)
        )

    # --- the batch's last steps, in its transaction -------------------------------------------

    def finish(self, conn, *, sources: list[str] | None = None,
               set_aside: list[SetAsideFile] | None = None,
               settled: list[str] | None = None, more_incidents: list[Incident] | None = None,
               ) -> None:
        """Quarantine, drift, incidents, high-water mark and audit, in this order. `sources`
        (file drops): the quarantine rows replaced are those of these files and of the
        `set_aside` files (else the batch's own); `settled`: files no longer waiting."""
        target = self.target
        self.write_quarantine(conn, sources=sources, set_aside=set_aside)
        self.record_drift(conn)
        if settled is not None:
            # Resolved first: an incident the client reports for this batch (a file that
            # changed while it was read) must stay open.
            incidents.resolve(conn, target.system, target.entity, ("file_waiting",), settled)
        incidents.resolve(conn, target.system, target.entity, incidents.CLEARED_BY_A_LOAD)
        incidents.record(conn, target.system, target.entity,
                         [*self.extraction.incidents, *(more_incidents or ())], self.batch_id)
        self.record_watermark(conn)
        self.record_audit(conn)  # last: its finished_at is (within milliseconds) the commit time

    def write_quarantine(self, conn, *, sources: list[str] | None = None,
                         set_aside: list[SetAsideFile] | None = None) -> None:
        """Replace the quarantine rows of this batch — or, for file drops, of its `sources` and
        `set_aside` files — with its quarantined records, then each line of the set-aside files
        (an unreadable one — a link, a device — by name only), counted as read and quarantined.
        A re-run of the batch thus re-quarantines, once."""
        target, result = self.target, self.result
        set_aside = set_aside or []
        if sources is None:
            conn.execute("delete from ops.quarantine where batch_id = %s", (self.batch_id,))
        else:
            conn.execute(
                "delete from ops.quarantine where system = %s and entity = %s "
                "and source = any(%s)",
                (target.system, target.entity, [*sources, *(f.name for f in set_aside)]),
            )
        with conn.cursor().copy(
            "copy ops.quarantine (batch_id, system, entity, source, record_ref, reason, "
            "raw_payload) from stdin"
        ) as copy:
            for src, ref, reason, payload in self.quarantined:
                copy.write_row([self.batch_id, target.system, target.entity, storable(src, 500),
                                storable(ref, 500), storable(reason, 2000), storable(payload)])
            for file in set_aside:
                for ref, payload in file.lines():
                    copy.write_row([self.batch_id, target.system, target.entity,
                                    storable(file.name, 500), ref,
                                    storable(file.reason_for(ref), 2000),
                                    storable(payload, file.max_payload_bytes)])
                    result.rows_read += 1
                    result.rows_quarantined += 1

    def record_drift(self, conn) -> None:
        """Undeclared columns met (kept in `_extra`) go to ops.schema_drift, once each."""
        for name in self.extra_columns:
            conn.execute(
                "insert into ops.schema_drift (system, entity, column_name, first_batch_id) "
                "values (%s, %s, %s, %s) on conflict do nothing",
                (self.target.system, self.target.entity, name, self.batch_id),
            )
        self.result.new_columns = list(self.extra_columns)

    def record_watermark(self, conn) -> None:
        """Move the entity's high-water mark (`ops.extract_watermark`: everything before
        `loaded_upto` was loaded and committed) to `interval_end`, in the batch's transaction —
        but only over time it covers without a gap (the batch starts at or before the mark),
        so a backfill of old days never moves it and an outage's gap is never skipped.
        "start" also creates a missing mark (a scheduled run); "keep" changes nothing (a
        snapshot has no time position)."""
        mode, target = self.watermark, self.target
        if mode == "keep":
            return
        if mode not in WATERMARK_MODES:
            raise ValueError(f"watermark mode {mode!r}: advance, start or keep")
        moved = conn.execute(
            "update ops.extract_watermark set loaded_upto = %s, batch_id = %s, "
            "updated_at = clock_timestamp() where system = %s and entity = %s "
            "and loaded_upto >= %s and loaded_upto < %s",
            (self.interval_end, self.batch_id, target.system, target.entity,
             self.interval_start, self.interval_end),
        ).rowcount
        if not moved and mode == "start":
            conn.execute(
                "insert into ops.extract_watermark (system, entity, loaded_upto, batch_id) "
                "values (%s, %s, %s, %s) on conflict (system, entity) do nothing",
                (target.system, target.entity, self.interval_end, self.batch_id))

    def record_audit(self, conn, status: str = "loaded") -> None:
        """The batch's audit row. Its window starts at the earliest period the batch loads (a
        late file's, when before the window). `finished_at` is `clock_timestamp()`, and this is
        the batch transaction's last statement, so it is the commit time to within
        milliseconds (`now()` would be the transaction's start: a long load would look older
        than it is, and the transform, which takes the batches finished since its last run,
        could miss it)."""
        target, result = self.target, self.result
        covers_from = self.extraction.covers_from or self.window_start
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
            (result.batch_id, target.system, target.entity, self.interval_start,
             self.interval_end, min(self.window_start, covers_from),
             self.extraction.source_label, result.rows_read, result.rows_loaded,
             result.rows_quarantined, result.duplicates_skipped, result.rows_replaced,
             self.run_id, self.started_at, status),
        )

    def changed(self, table: str, rows: int) -> None:
        """Record that the batch inserted or deleted `rows` rows of `table`."""
        self.changed_rows[table] = self.changed_rows.get(table, 0) + rows

    def commit_and_analyze(self, conn) -> list[str]:
        """Commit the batch, then ANALYZE the tables it changed that autovacuum would analyse
        now (see the module docstring); returns them. Each in its own short transaction."""
        import psycopg

        conn.commit()
        changed = {table: rows for table, rows in self.changed_rows.items() if rows > 0}
        if not changed:
            return []
        # This session's row counts reach the server's statistics now (PG 15; else at the
        # session's end, *after* the ANALYZE reset them, and the next batch would count them
        # again): the decision sees them, and the ANALYZE forgets them.
        conn.execute("select pg_stat_force_next_flush()")
        conn.commit()
        stats = conn.execute(
            "select t.name, c.relkind::text, c.reltuples, "
            "coalesce(pg_stat_get_mod_since_analyze(c.oid), 0), "
            "current_setting('autovacuum_analyze_threshold')::float8, "
            "current_setting('autovacuum_analyze_scale_factor')::float8 "
            "from unnest(%s::text[]) as t(name) join pg_class c on c.oid = to_regclass(t.name)",
            (list(changed),)).fetchall()
        conn.commit()
        due = []
        for table, kind, tuples, modified, threshold, scale in stats:
            never = tuples < 0  # reltuples -1: never analysed (nor vacuumed)
            modified = max(modified, changed[table])  # (the flush is asynchronous to us)
            if never or (kind != "p" and modified >= threshold + scale * tuples):
                due.append(table)
        analysed = []
        for table in due:
            try:
                conn.execute("set local lock_timeout = '10s'")
                conn.execute(f"analyze {table}")
                conn.commit()
                analysed.append(table)
            except psycopg.Error as exc:
                conn.rollback()
                log.warning("%s: ANALYZE after batch %s skipped (%s); autovacuum will do it",
                            table, self.batch_id, type(exc).__name__)
        return analysed

    def refuse(self, conn, status: str, *, keep_quarantined: bool = False) -> None:
        """End the batch without its data: roll back what it wrote, then record (with
        `keep_quarantined`, its quarantined records and) its audit row with `status`, and
        commit that alone."""
        conn.rollback()
        if keep_quarantined:
            self.write_quarantine(conn)
        self.record_audit(conn, status=status)
        conn.commit()

    def log_outcome(self) -> None:
        result, table = self.result, self.target.table
        if result.files_rejected:
            log.warning("%s: set aside whole: %s", table, "; ".join(
                f"{name}: {reason}" for name, reason in result.files_rejected.items()))
        if result.new_columns:
            log.warning("%s: undeclared columns kept in _extra: %s", table, result.new_columns)


# --- raw tables ---------------------------------------------------------------------------------

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


# --- records the database refuses ---------------------------------------------------------------

GUARD_CHUNK_ROWS = 5000
QUARANTINE_PAYLOAD_BYTES = 64 * 1024


def payload_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, default=str)


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
    encoding cannot hold, a value out of range, a constraint, a value too large for an index),
    the chunk is split in halves until the refused records are found: each goes to
    `quarantined` with the database's own reason, the rest load. One bad record costs about
    2·log2(chunk) small COPYs, not the batch."""

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
                psycopg.errors.ProgramLimitExceeded, UnicodeEncodeError) as exc:
            self.conn.execute("rollback to savepoint guarded_copy")
            if len(rows) == 1:
                record = rows[0][0]
                self.quarantined.append((
                    record.source, record.record_ref,
                    f"refused by the database: {_database_reason(exc)}",
                    storable(record.raw_text or payload_text(record.payload))))
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
