"""The historian fast path: large delimited exports COPYed as bytes (`Extraction.delimited_files`).

The entity is stored normalised: `raw_<system>.<entity>__rows` (the declared columns, `_extra`,
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

import logging
import re
from collections.abc import Iterable
from functools import lru_cache

from factory_platform.extract.load.batch import METADATA_COLUMNS, Batch, LoadTarget
from factory_platform.extract.load.delivery import (
    COPY_CHUNK_BYTES,
    DelimitedFile,
    open_regular,
)

log = logging.getLogger(__name__)

FILES_PER_PARTITION = 48  # two days of hourly files: what a reload of one file scans
_RANGE_BOUND = re.compile(r"FOR VALUES FROM \('?(\d+)'?\) TO \('?(\d+)'?\)")
_PG_ENCODINGS = {"utf8": None, "gb18030": "GB18030", "gbk": "GBK", "latin1": "LATIN1",
                 "iso88591": "LATIN1", "cp1252": "WIN1252", "windows1252": "WIN1252"}


def historian_tables(target: LoadTarget) -> tuple[str, str]:
    """The fast path's physical tables behind the view `target.table`: (rows, files)."""
    return f"{target.table}__rows", f"{target.table}__files"


def ensure_historian_tables(conn, target: LoadTarget) -> None:
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


def copy_delimited_files(conn, batch: Batch, files: list[DelimitedFile], sources: list[str],
                         read_per_file: dict[str, int]) -> dict[str, int]:
    """Replace the rows of the batch's `sources` with the files': one COPY per partition; when
    Postgres refuses it, each file again under its own savepoint, and a file refused alone (or
    holding a quote or an over-long line) is read record by record. Returns file name → file
    id; counts rows read and loaded into the batch's result and `read_per_file`."""
    import psycopg

    target, result = batch.target, batch.result
    rows_table, files_table = historian_tables(target)
    old = conn.execute(
        f"delete from {files_table} where source = any(%s) returning source, file_id",
        (sources,)).fetchall()
    if old:
        result.rows_replaced = conn.execute(
            f"delete from {rows_table} where _file_id = any(%s::bigint[])",
            ([file_id for _, file_id in old],)).rowcount
    if not files:
        batch.changed(files_table, len(old))
        return {}
    # A file loaded before keeps its id, so its rows go back to its partition (into the space
    # vacuum frees there) rather than leaving that partition half empty for good.
    kept_ids = dict(old)
    file_ids = dict(conn.execute(
        f"insert into {files_table} (file_id, source, batch_id, extracted_at, interval_start, "
        "interval_end) select coalesce(v.id, nextval(pg_get_serial_sequence(%s, 'file_id'))), "
        "v.name, %s, %s, %s, %s from unnest(%s::text[], %s::bigint[]) as v(name, id) "
        "returning source, file_id",
        (files_table, *batch.stamp, [f.name for f in files],
         [kept_ids.get(f.name) for f in files]),
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
            read, loaded = _copy_file_records(conn, batch, tables[file_id], file, file_id)
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
    # for the statistics after the commit: each partition written, the file table, the parent
    batch.changed(files_table, len(old) + len(files))
    batch.changed(rows_table, result.rows_replaced + sum(loaded_by_copy.values()))
    for file in files:
        batch.changed(tables[file_ids[file.name]], loaded_by_copy[file.name])
    return file_ids


def drop_file(conn, target: LoadTarget, file_id: int) -> int:
    """Remove a rejected file's rows and its file row from the fast path's tables."""
    rows_table, files_table = historian_tables(target)
    dropped = conn.execute(f"delete from {rows_table} where _file_id = %s", (file_id,)).rowcount
    conn.execute(f"delete from {files_table} where file_id = %s", (file_id,))
    return dropped


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
            with open_regular(file.path) as fh:
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


def _copy_file_records(conn, batch: Batch, rows_table: str, file: DelimitedFile,
                       file_id: int) -> tuple[int, int]:
    """Fallback for one file: parse record by record; good rows COPY, bad ones (and the ones
    the database refuses) quarantine. Returns (read, loaded); lines the reader could not
    read count as read."""
    refused: list[tuple[str, str, str, str | None]] = []
    read, loaded = batch.copy_records(
        conn, f"copy {rows_table} ({batch.target.columns('_file_id')}) from stdin",
        file.records(refused), lambda record: [file_id])
    batch.quarantined.extend(refused)
    return read + len(refused), loaded
