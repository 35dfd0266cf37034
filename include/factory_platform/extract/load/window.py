"""Interval loads of REST and SQL records: a batch replaces its window whole, in one transaction.

Records stream into a temporary table with COPY (constant memory); then, in one transaction,
the target's rows whose replace column falls in [window start, interval end) are deleted, the
distinct new rows inserted (one per natural key and version), and the batch's last steps run
(`Batch.finish`); after the commit the table is analysed when it needs it
(`Batch.commit_and_analyze`). A batch over the source's reject threshold loads nothing but
keeps its quarantined records (`LoadRejected`). For a source whose empty window is not a deletion (a
change feed), an answer that is empty, or lacks versions raw holds for the window, is refused
and replaces nothing (`EmptyAnswerRefused`, `IncompleteAnswerRefused`).
"""

from __future__ import annotations

from datetime import datetime

from factory_platform.extract.load.batch import (
    Batch,
    EmptyAnswerRefused,
    IncompleteAnswerRefused,
    LoadRejected,
    LoadTarget,
    ensure_raw_table,
)


def load_window(dsn: str, batch: Batch) -> None:
    """Replace the target's rows of the batch's window with its distinct valid records."""
    import psycopg

    target, extraction, result = batch.target, batch.extraction, batch.result
    window_start, interval_end = batch.window_start, batch.interval_end
    with psycopg.connect(dsn) as conn:
        ensure_raw_table(conn, target)
        conn.commit()
        batch.lock_target(conn)
        conn.execute(f"create temp table _incoming on commit drop as select * from {target.table} "
                     "with no data")
        read, _ = batch.copy_records(
            conn, f"copy _incoming ({target.columns('_source')}) from stdin",
            extraction.records, lambda record: [record.source])
        result.rows_read += read
        batch.quarantined.extend(extraction.rejected)
        result.rows_read += len(extraction.rejected)
        batch.count_quarantined()
        rejection = batch.rejection()
        if rejection:
            # Nothing of the batch loads; its rejected records are still kept and counted.
            result.rows_loaded = 0
            batch.refuse(conn, "rejected", keep_quarantined=True)
            raise LoadRejected(rejection)
        if (result.rows_read == 0 and not extraction.empty_is_deletion
                and _window_holds_rows(conn, target, window_start, interval_end)):
            batch.refuse(conn, "refused")
            raise EmptyAnswerRefused(
                f"{target.system}.{target.entity} from {extraction.source_label}: the source "
                f"answered no records for [{window_start.isoformat()}, "
                f"{interval_end.isoformat()}), where {target.table} holds rows; an empty answer "
                "is not applied as a deletion (the source does not declare "
                "empty_window_deletes). Nothing was replaced.")

        key = ", ".join(f'"{c}"' for c in target.natural_key)
        version = f", {_q(target.replace_column)}" if target.replace_column else ""
        cursor_order = f', "{target.replace_column}" desc' if target.replace_column else ""
        distinct_rows = conn.execute(
            f"create temp table _distinct on commit drop as "
            f"select distinct on ({key}{version}) * "
            f"from _incoming order by {key}{cursor_order}"
        ).rowcount
        if not extraction.empty_is_deletion and target.replace_column:
            # A change feed never drops a version: an answer lacking versions raw holds for the
            # window (a page that came back empty or cut short) must not delete them.
            missing = _versions_missing(conn, target, key, window_start, interval_end)
            if missing:
                batch.refuse(conn, "refused")
                raise IncompleteAnswerRefused(
                    f"{target.system}.{target.entity} from {extraction.source_label}: the answer "
                    f"for [{window_start.isoformat()}, {interval_end.isoformat()}) lacks "
                    f"{missing} version(s) {target.table} holds for that window (read "
                    f"{result.rows_read}); a change feed never drops a version, so the answer "
                    "is refused, not applied as a deletion. Nothing was replaced.")
        result.duplicates_skipped = (result.rows_read - result.rows_quarantined) - distinct_rows
        batch.count_duplicates()

        result.rows_replaced = conn.execute(
            f'delete from {target.table} where "{target.replace_column}" >= %s '
            f'and "{target.replace_column}" < %s',
            (window_start, interval_end),
        ).rowcount
        all_columns = target.columns("_source")
        result.rows_loaded = conn.execute(
            f"insert into {target.table} ({all_columns}, _batch_id, _extracted_at, "
            f"_interval_start, _interval_end) "
            f"select {all_columns}, %s, %s, %s, %s from _distinct",
            batch.stamp,
        ).rowcount
        batch.changed(target.table, result.rows_replaced + result.rows_loaded)
        batch.finish(conn)
        batch.commit_and_analyze(conn)
    batch.log_outcome()


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


def _q(name: str | None) -> str:
    return f'"{name}"'
