"""Interval loads that a retry cannot double (PATTERNS.md §1).

Records stream into a temporary table with COPY (constant memory); then, in one transaction,
the target's rows of this batch's scope are deleted, the distinct new rows inserted, the
rejected records written to `ops.quarantine` and the batch recorded in `ops.load_audit`.
The batch id is derived from system, entity and window, so a re-run replaces its own audit and
quarantine rows as well as its data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from factory_platform.extract.fields import Field, RecordRejected, parse_record
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
    on_rejected: Callable[[str], None] | None = None  # e.g. move files to quarantine


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


class LoadRejected(RuntimeError):
    """Too large a share of a batch was rejected: the batch did not load."""


def batch_id_for(system: str, entity: str, window_start: datetime, window_end: datetime) -> str:
    return f"{system}.{entity}:{window_start.isoformat()}/{window_end.isoformat()}"


def ensure_raw_table(conn, target: LoadTarget) -> None:
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
) -> LoadResult:
    """Load one batch: replace the target rows of [window_start, interval_end) (or of the
    extraction's `replace_sources`, for file drops) with the distinct valid records;
    quarantine the rest. Calls the extraction's `on_committed` after the commit."""
    try:
        result = _load_batch(dsn, target, extraction, interval_start=interval_start,
                             interval_end=interval_end, window_start=window_start, run_id=run_id)
    except LoadRejected as exc:
        if extraction.on_rejected:
            extraction.on_rejected(str(exc))
        raise
    if extraction.on_committed:
        extraction.on_committed()
    return result


def _load_batch(dsn, target, extraction, *, interval_start, interval_end, window_start,
                run_id) -> LoadResult:
    import psycopg

    source_label = extraction.source_label
    replace_sources = extraction.replace_sources
    ensure_warehouse_once(dsn)
    batch_id = batch_id_for(target.system, target.entity, window_start, interval_end)
    result = LoadResult(batch_id=batch_id)
    started_at = datetime.now(timezone.utc)
    quarantined: list[tuple[str, str, str, str | None]] = []
    extra_columns: dict[str, None] = {}
    column_names = [f.name for f in target.fields]
    copy_columns = ", ".join([f'"{c}"' for c in column_names] + ["_extra", "_source"])

    with psycopg.connect(dsn) as conn:
        ensure_raw_table(conn, target)
        conn.commit()
        # One load per table at a time: overlapping windows (lookback, backfills running in
        # parallel) must not interleave their delete and insert.
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (target.table,))
        conn.execute(
            f"create temp table _incoming on commit drop as select * from {target.table} with no data"
        )
        with conn.cursor().copy(f"copy _incoming ({copy_columns}) from stdin") as copy:
            for record in extraction.records:
                result.rows_read += 1
                try:
                    values, extras = parse_record(record.payload, target.fields)
                except RecordRejected as exc:
                    quarantined.append((record.source, record.record_ref, str(exc),
                                        record.raw_text or _payload_text(record.payload)))
                    continue
                for name in extras:
                    extra_columns.setdefault(name)
                extra = json.dumps(extras, ensure_ascii=False, default=str) if extras else None
                copy.write_row([*values, extra, record.source])
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
            _record_audit(conn, target, result, interval_start, interval_end, window_start,
                          source_label, run_id, started_at, status="rejected")
            conn.commit()
            raise LoadRejected(rejection)

        key = ", ".join(f'"{c}"' for c in target.natural_key)
        cursor_order = f', "{target.replace_column}" desc' if target.replace_column else ""
        distinct_rows = conn.execute(
            f"create temp table _distinct on commit drop as "
            f"select distinct on ({key}{', ' + _q(target.replace_column) if target.replace_column else ''}) * "
            f"from _incoming order by {key}{cursor_order}"
        ).rowcount
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
        for name in extra_columns:
            conn.execute(
                "insert into ops.schema_drift (system, entity, column_name, first_batch_id) "
                "values (%s, %s, %s, %s) on conflict do nothing",
                (target.system, target.entity, name, batch_id),
            )
        result.new_columns = list(extra_columns)
        _record_audit(conn, target, result, interval_start, interval_end, window_start,
                      source_label, run_id, started_at)
    if result.new_columns:
        log.warning("%s: undeclared columns kept in _extra: %s", target.table, result.new_columns)
    return result


def _q(name: str | None) -> str:
    return f'"{name}"'


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
            copy.write_row([batch_id, target.system, target.entity, src, ref, reason, payload])


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


def _record_audit(conn, target, result, interval_start, interval_end, window_start,
                  source_label, run_id, started_at, status: str = "loaded") -> None:
    conn.execute(
        """
        insert into ops.load_audit (batch_id, system, entity, interval_start, interval_end,
            window_start, source, rows_read, rows_loaded, rows_quarantined, duplicates_skipped,
            rows_replaced, run_id, started_at, finished_at, status)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s)
        on conflict (batch_id) do update set
            source = excluded.source, rows_read = excluded.rows_read,
            rows_loaded = excluded.rows_loaded, rows_quarantined = excluded.rows_quarantined,
            duplicates_skipped = excluded.duplicates_skipped,
            rows_replaced = excluded.rows_replaced, run_id = excluded.run_id,
            started_at = excluded.started_at, finished_at = now(), status = excluded.status
        """,
        (result.batch_id, target.system, target.entity, interval_start, interval_end,
         window_start, source_label, result.rows_read, result.rows_loaded,
         result.rows_quarantined, result.duplicates_skipped, result.rows_replaced, run_id,
         started_at, status),
    )

