"""Batches scoped by source, not by window: file drops, and the SQL snapshots and date-keyed
entities that name what they replace (an `Extraction` with `replace_sources`).

The batch replaces the raw rows *and* the quarantine rows of exactly the sources (files) it
read, so a file picked up again by a later window's lookback, a re-run or a backfill lands
once. Files set aside whole by the client (cut off, unreadable: `Extraction.set_aside`) have
every line recorded in `ops.quarantine` with the file's reason, counted as read and
quarantined; they do not count towards the reject threshold, which is about bad records in
readable files. A file whose own rejected share passes the source's threshold is set aside
alone (`files_over_threshold`): the window's other files load.

Two paths: records parsed one by one into a temporary table (`_insert_file_records`), or, for
the historian's delimited exports (`Extraction.delimited_files`), the files' bytes COPYed
straight into their tables (`load.historian`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from factory_platform.extract.incidents import Incident
from factory_platform.extract.load import historian
from factory_platform.extract.load.batch import (
    Batch,
    LoadTarget,
    ensure_raw_table,
    reject_share_over,
)
from factory_platform.extract.load.delivery import (
    QuarantinedRecord,
    SetAsideFile,
    SourceRecord,
)


def load_files(dsn: str, batch: Batch) -> None:
    """Replace the raw rows of the batch's `replace_sources` and the quarantine rows of those
    files and of the files set aside."""
    import psycopg

    target, extraction, result = batch.target, batch.extraction, batch.result
    sources = list(extraction.replace_sources or [])
    fast = extraction.delimited_files is not None
    set_aside = list(extraction.set_aside)

    with psycopg.connect(dsn) as conn:
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"ddl raw_{target.system}",))
        if fast:
            historian.ensure_historian_tables(conn, target)
        elif not _file_table_ready(conn, target):
            ensure_raw_table(conn, target)
            conn.execute(f"create index if not exists {target.entity}__source_idx "
                         f"on {target.table} (_source)")
        conn.commit()
        batch.lock_target(conn)
        read_per_file: dict[str, int] = {}
        if not sources:
            pass  # no file in this window: only the audit row
        elif fast:
            file_ids = historian.copy_delimited_files(conn, batch, extraction.delimited_files,
                                                      sources, read_per_file)
            batch.quarantined.extend(extraction.rejected)
            for name, reason in files_over_threshold(target, read_per_file, batch.quarantined,
                                                     extraction.rejected).items():
                result.files_rejected[name] = reason
                result.rows_loaded -= historian.drop_file(conn, target, file_ids[name])
                result.rows_read -= read_per_file[name]
                line_reasons = _line_reasons(batch.quarantined, name)
                batch.quarantined = [q for q in batch.quarantined if q[0] != name]
                file = next(f for f in extraction.delimited_files if f.name == name)
                set_aside.append(SetAsideFile(name, file.path, reason, file.encoding,
                                              line_reasons=line_reasons))
        else:
            _insert_file_records(conn, batch, sources, read_per_file)
        if not fast:
            batch.quarantined.extend(extraction.rejected)
        result.rows_read += len(extraction.rejected)
        batch.count_quarantined()
        batch.count_duplicates()
        settled = [name for name in sources if name not in result.files_rejected]
        settled += [f.name.split(" (re-delivery")[0] for f in set_aside]  # no longer waiting
        batch.finish(conn, sources=sources, set_aside=set_aside, settled=settled,
                     more_incidents=[Incident("file_rejected", name, reason)
                                     for name, reason in result.files_rejected.items()])
        batch.commit_and_analyze(conn)
    batch.log_outcome()


def files_over_threshold(target: LoadTarget, read_per_file: dict[str, int],
                         quarantined: list[QuarantinedRecord],
                         client_rejected: list[QuarantinedRecord]) -> dict[str, str]:
    """name → reason, for each file whose rejected share passes the source's threshold."""
    bad: dict[str, int] = {}
    for src, *_ in quarantined:
        bad[src] = bad.get(src, 0) + 1
    read = dict(read_per_file)
    for src, *_ in client_rejected:
        read[src] = read.get(src, 0) + 1
    over = {}
    for name, total in read.items():
        share = reject_share_over(target, bad.get(name, 0), total)
        if share is not None:
            over[name] = (f"{bad[name]} of {total} records rejected ({share:.0%} > allowed "
                          f"{target.max_reject_share:.0%}): the file is set aside whole, the "
                          "window's other files loaded")
    return over


def _line_reasons(rejected: list[QuarantinedRecord], name: str) -> dict[str, str]:
    return {ref: reason for src, ref, reason, _ in rejected if src == name}


def _insert_file_records(conn, batch: Batch, sources: list[str],
                         read_per_file: dict[str, int]) -> None:
    """Row path: parse each record, COPY into a temp table (refused records quarantined), set
    aside whole the files over the reject threshold, then replace the files' rows."""
    target, extraction, result = batch.target, batch.extraction, batch.result
    all_columns = target.columns("_source")
    conn.execute(
        f"create temp table _incoming on commit drop as select * from {target.table} with no data"
    )
    conn.execute("alter table _incoming add column _record_ref text")

    def counted(records: Iterable[SourceRecord]) -> Iterator[SourceRecord]:
        for record in records:
            read_per_file[record.source] = read_per_file.get(record.source, 0) + 1
            yield record

    read, _ = batch.copy_records(
        conn, f"copy _incoming ({target.columns('_source', '_record_ref')}) from stdin",
        counted(extraction.records), lambda record: [record.source, record.record_ref])
    result.rows_read += read
    quarantined = batch.quarantined
    over = files_over_threshold(target, read_per_file, quarantined, extraction.rejected)
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
        batch.stamp,
    ).rowcount
    result.duplicates_skipped = (result.rows_read - len(quarantined)) - result.rows_loaded
    batch.changed(target.table, result.rows_replaced + result.rows_loaded)


def _file_table_ready(conn, target: LoadTarget) -> bool:
    """One quick catalog look: the raw table has every declared column and its `_source` index."""
    have = conn.execute(
        "select coalesce(array_agg(attname::text), '{}'), "
        "to_regclass(%s) is not null from pg_attribute "
        "where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped",
        (f"raw_{target.system}.{target.entity}__source_idx", target.table),
    ).fetchone()
    return have[1] and {f.name for f in target.fields} <= set(have[0])
