"""File-drop client (interface `csv_drop`): delimited exports a plant system drops into a folder
(WMS movements and cycle counts, SCADA historian tags and alarms, EMS meter readings).

**Folder.** The source's connection (conn_type `fs`) names the inbox in `extra.path`; loaded
files move to `<inbox>/archive/`, files set aside whole to `<inbox>/quarantine/` (beside them
`<file>.reason.txt`). Hidden names (`.x.part` while a file is being written) are ignored.

**Which files a run reads.** An entity's `endpoint` is a regular expression for its file names
with a named group `hour` (`YYYYMMDDTHH`, the UTC hour the file covers) or `day` (`YYYYMMDD`, read
as that UTC day's midnight). A run for the window `[interval_start - lookback, interval_end)`
reads every file whose hour/day lies in its own interval — from the inbox, the archive or the
quarantine folder, so a re-run or backfill finds files already moved — plus files in the
lookback part that are still in the inbox (late deliveries). Files of the lookback part that
were already moved belong to an earlier run and are left alone, so each file keeps the rows of
the run that owns it and a lookback costs a folder listing, not a reload.

**Replace semantics.** The batch replaces the raw rows and quarantine rows of exactly the files
it read (`Extraction.replace_sources`, see `loader`), so a file loads once however often it is
picked up. A file delivered twice under another name (WMS `…_RESEND.csv`) is recognised by its
sha256 (hashed only when another file in the window has the same size): it loads nothing, its
rows count as duplicates and it is archived.

**Bad input.** A file without a line end after its last line (cut off mid-row), an empty file or
an undecodable header is set aside whole: every line goes to `ops.quarantine` with the reason,
the file to the quarantine folder. A line that cannot be decoded in the source's declared
encoding or has the wrong number of fields is quarantined with its line number, as is a record
whose values fail their declared types. A file whose header lacks a required column stops the
batch with `MissingColumnError`; an undeclared column is kept (`_extra`, `ops.schema_drift`).
Files are split on the delimiter without quoting (as the plant's exports are written).

**Fast path.** Entities with the option `("load", "copy")` (the historian) hand the loader the
files themselves (`Extraction.delimited_files`): Postgres parses and casts their bytes in COPY,
and only a file it refuses is read record by record here (`loader` module docstring).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path

from factory_platform.extract.loader import (
    DelimitedFile,
    Extraction,
    SetAsideFile,
    SourceRecord,
)

log = logging.getLogger(__name__)

INBOX = "inbox"
ARCHIVE = "archive"
QUARANTINE = "quarantine"
LOCATIONS = (INBOX, ARCHIVE, QUARANTINE)  # precedence when a name lies in several
READ_CHUNK_BYTES = 1 << 20


class MissingColumnError(ValueError):
    """A delivered file lacks a column its entity declares required."""


@dataclass
class DropFile:
    """A delivered file found in the inbox or one of its folders."""

    name: str
    inbox: Path
    location: str
    period_start: datetime
    size: int
    _sha256: str | None = field(default=None, repr=False)

    def folder(self, location: str) -> Path:
        return self.inbox if location == INBOX else self.inbox / location

    @property
    def path(self) -> Path:
        """Where the file is now (a concurrent run may have moved it meanwhile)."""
        for location in (self.location, *LOCATIONS):
            candidate = self.folder(location) / self.name
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"{self.name} is no longer in {self.inbox} or its folders")

    def sha256(self) -> str:
        """The content hash (computed once, streamed)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            with open(self.path, "rb") as fh:
                while chunk := fh.read(READ_CHUNK_BYTES):
                    digest.update(chunk)
            self._sha256 = digest.hexdigest()
        return self._sha256


@dataclass(frozen=True)
class FileShape:
    """What the first and last bytes of a delimited file say about it."""

    columns: tuple[str, ...]
    data_offset: int
    crlf: bool
    problem: str | None  # why the whole file is set aside, if it is


def inbox_of(source) -> Path:
    """The source's inbox folder: `extra.path` of its Airflow connection."""
    from airflow.sdk import BaseHook

    path = BaseHook.get_connection(source.conn_id).extra_dejson.get("path")
    if not path:
        raise ValueError(f"{source.system}: connection {source.conn_id!r} has no extra.path "
                         "(the folder the plant drops its files into)")
    return Path(path)


def file_period(match: re.Match) -> datetime:
    """The UTC start of the hour or day a file name carries."""
    groups = match.groupdict()
    if groups.get("hour") or groups.get("day"):
        return _period(groups.get("hour"), groups.get("day"))
    raise ValueError(f"file-name pattern {match.re.pattern!r} has no 'hour' or 'day' group")


@lru_cache(maxsize=1 << 16)
def _period(hour: str | None, day: str | None) -> datetime:
    if hour:
        return datetime.strptime(hour, "%Y%m%dT%H").replace(tzinfo=UTC)
    return datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)


def find_drop_files(inbox: Path, pattern: str, start: datetime, end: datetime) -> list[DropFile]:
    """Files named by `pattern` whose period starts in [start, end), in inbox, archive or
    quarantine (one per name, by that precedence), oldest first."""
    regex = re.compile(pattern)
    found: dict[str, DropFile] = {}
    for location in LOCATIONS:
        folder = inbox if location == INBOX else inbox / location
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name in found or not entry.is_file():
                continue
            match = regex.fullmatch(entry.name)
            if not match:
                continue
            period = file_period(match)
            if start <= period < end:
                found[entry.name] = DropFile(entry.name, inbox, location, period,
                                             entry.stat().st_size)
    return sorted(found.values(), key=lambda f: (f.period_start, f.name))


def choose_files(found: list[DropFile], window,
                 done: Callable[[DropFile], bool] = lambda f: False) -> list[DropFile]:
    """The files this run reads: its own interval's wherever they lie; lookback files only
    while they wait in the inbox (and are not `done` for this entity)."""
    return [
        f for f in found
        if window.interval_start <= f.period_start < window.interval_end
        or (f.location == INBOX and not done(f))
    ]


def duplicates_of(chosen: list[DropFile], found: list[DropFile]) -> dict[str, str]:
    """name → earlier file with the same bytes, for each chosen file delivered twice."""
    order = {f.name: i for i, f in enumerate(found)}
    by_size: dict[int, list[DropFile]] = {}
    for f in found:
        by_size.setdefault(f.size, []).append(f)
    duplicates: dict[str, str] = {}
    for f in chosen:
        for earlier in by_size.get(f.size, []):
            if order[earlier.name] >= order[f.name]:
                break
            if earlier.sha256() == f.sha256():
                duplicates[f.name] = earlier.name
                break
    return duplicates


def count_data_lines(path: Path, header_lines: int = 1) -> int:
    """Data lines of a file (a last line without line end counts)."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK_BYTES):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return max(0, lines - header_lines)


def inspect_delimited(path: Path, encoding: str, delimiter: str) -> FileShape:
    """Header columns, where the data starts, line ends, and whether the file is whole."""
    with open(path, "rb") as fh:
        header = fh.readline()
        data_offset = fh.tell()
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
        last = fh.read(1)
    if not header.strip():
        return FileShape((), data_offset, False, "empty file: no header line")
    try:
        text = header.rstrip(b"\r\n").decode(encoding).lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        return FileShape((), data_offset, False,
                         f"header cannot be decoded as {encoding} ({exc.reason})")
    columns = tuple(name.strip() for name in text.split(delimiter))
    problem = None
    if last != b"\n":
        lines = count_data_lines(path) + 1
        problem = (f"file cut off mid-row: line {lines} has no line end "
                   f"({size} bytes); the whole file is quarantined")
    elif len(set(columns)) != len(columns):
        problem = f"header names a column twice: {text}"
    return FileShape(columns, data_offset, header.endswith(b"\r\n"), problem)


def check_required_columns(source, entity, file: DropFile, columns: tuple[str, ...]) -> None:
    """Fail clearly when the header lacks a required column."""
    missing = [f.name for f in entity.fields if f.required and f.name not in columns]
    if missing:
        raise MissingColumnError(
            f"{source.system}: file {file.name} (in {file.folder(file.location)}) has no column "
            f"'{missing[0]}', required by {source.system}.{entity.name}"
            + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else "")
            + f"; its header is: {';'.join(columns)}"
        )


def read_records(file: DropFile, shape: FileShape, encoding: str, delimiter: str,
                 rejected: list) -> Iterator[SourceRecord]:
    """Yield each data line as a record; lines that cannot be read go to `rejected`."""
    width = len(shape.columns)
    with open(file.path, "rb") as fh:
        fh.seek(shape.data_offset)
        for number, raw in enumerate(fh, start=2):
            body = raw.rstrip(b"\r\n")
            ref = f"line {number}"
            try:
                line = body.decode(encoding)
            except UnicodeDecodeError as exc:
                reason = f"cannot decode the line as {encoding} ({exc.reason} at byte {exc.start})"
                rejected.append((file.name, ref, reason, body.decode(encoding, "replace")))
                continue
            values = line.split(delimiter)
            if len(values) != width:
                reason = f"{len(values)} fields where the header has {width}"
                rejected.append((file.name, ref, reason, line))
                continue
            payload = {name: (value if value != "" else None)
                       for name, value in zip(shape.columns, values)}
            yield SourceRecord(source=file.name, record_ref=ref, payload=payload, raw_text=line)


def move_file(file: DropFile, destination: str, reason: str | None = None) -> None:
    """Move a read file to archive/ or quarantine/ (with `<file>.reason.txt`); stale copies of
    the same name in the other folder go (the version just read is the one that counts)."""
    target_dir = file.folder(destination)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / file.name
    try:
        current = file.path
    except FileNotFoundError:
        log.warning("%s was moved away before it could be settled", file.name)
        return
    if current != target:
        os.replace(current, target)
    for other in (ARCHIVE, QUARANTINE):
        if other != destination and current.parent != file.folder(other):
            (file.folder(other) / file.name).unlink(missing_ok=True)
    reason_file = file.folder(QUARANTINE) / f"{file.name}.reason.txt"
    if destination == QUARANTINE:
        reason_file.write_text((reason or "set aside") + "\n", encoding="utf-8")
    else:
        reason_file.unlink(missing_ok=True)


def describe(inbox: Path, chosen: list[DropFile]) -> str:
    """Source label for the audit: the folder and the files read."""
    if not chosen:
        return f"{inbox} (no files)"
    names = ", ".join(f.name for f in chosen[:3]) + (", …" if len(chosen) > 3 else "")
    return f"{inbox}: {len(chosen)} file(s): {names}"


def open_extraction(source, entity, window) -> Extraction:
    """Client entry point (see `extract.clients`): the entity's files of the window."""
    inbox = inbox_of(source)
    delimiter = entity.option("delimiter", ";")
    encoding = source.encoding
    found = find_drop_files(inbox, entity.endpoint, window.start, window.end)
    chosen = choose_files(found, window)
    duplicate_of = duplicates_of(chosen, found)
    extraction = Extraction(records=(), source_label=describe(inbox, chosen),
                            replace_sources=[f.name for f in chosen])
    reasons: dict[str, str] = {}
    loadable: list[tuple[DropFile, FileShape]] = []
    for file in chosen:
        if file.name in duplicate_of:
            extraction.duplicates += count_data_lines(file.path)
            log.info("%s: %s has the same bytes as %s; counted as duplicates", source.system,
                     file.name, duplicate_of[file.name])
            continue
        shape = inspect_delimited(file.path, encoding, delimiter)
        if shape.problem:
            reasons[file.name] = shape.problem
            extraction.set_aside.append(SetAsideFile(file.name, str(file.path), shape.problem,
                                                     encoding))
            continue
        check_required_columns(source, entity, file, shape.columns)
        loadable.append((file, shape))

    if entity.option("load") == "copy":
        extraction.delimited_files = [
            DelimitedFile(name=file.name, path=str(file.path), columns=shape.columns,
                          data_offset=shape.data_offset, encoding=encoding, delimiter=delimiter,
                          crlf=shape.crlf,
                          records=partial(read_records, file, shape, encoding, delimiter))
            for file, shape in loadable
        ]
    else:
        def records() -> Iterator[SourceRecord]:
            for file, shape in loadable:
                yield from read_records(file, shape, encoding, delimiter, extraction.rejected)

        extraction.records = records()

    def settle() -> None:
        for file in chosen:
            if file.name in reasons:
                move_file(file, QUARANTINE, f"{source.system}.{entity.name}: {reasons[file.name]}")
            else:
                move_file(file, ARCHIVE)

    extraction.on_committed = settle
    return extraction
