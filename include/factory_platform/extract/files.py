"""File-drop client (interface `csv_drop`): delimited exports a plant system drops into a folder
(WMS movements and cycle counts, SCADA historian tags and alarms, EMS meter readings).

**Folder.** The source's connection (conn_type `fs`) names the inbox in `extra.path`; loaded
files move to `<inbox>/archive/`, files set aside whole to `<inbox>/quarantine/` (beside them
`<file>.reason.txt`). Hidden names (`.x.part` while a file is being written) are ignored.
`archive/` and `quarantine/` must be real directories (a link there stops the run:
`UnsafeInboxError`).

**Nothing outside the inbox is read.** Folders are listed without following links, and every
data file is opened with `O_NOFOLLOW` and checked with `fstat` on the open descriptor (a
regular file with one link), so a file swapped for a link after the listing is not followed
either. A symbolic link, device, FIFO, socket or directory — or a file with several hard links
— whose name matches an entity is set aside unread (`SetAsideFile(readable=False)`: one
quarantine row naming it, no payload) and moved, the link itself, to `quarantine/`.

**Which files a run reads.** An entity's `endpoint` is a regular expression for its file names
with a named group `hour` (`YYYYMMDDTHH`, the UTC hour the file covers) or `day` (`YYYYMMDD`, read
as that UTC day's midnight). A run for the window `[interval_start - lookback, interval_end)`
reads every file whose hour/day lies in its own interval — from the inbox, the archive or the
quarantine folder, so a re-run or backfill finds files already moved — plus files in the
lookback part that are still in the inbox (late deliveries). Files of the lookback part that
were already moved belong to an earlier run and are left alone, so each file keeps the rows of
the run that owns it and a lookback costs a folder listing, not a reload. A file in the inbox
whose period lies *before* the window (after the lookback: a very late delivery) is taken too,
loaded with this batch (`Extraction.covers_from` widens the audit's window to its period, so
the transform re-processes it) and reported (`file_late` incident).

**Only stable files.** A file in the inbox is taken once its modification time is at least
`source.settle_time` old, or at once when `source.completion_marker` (e.g. `{name}.done`)
exists beside it; the size and mtime seen at the listing must still hold when the file is
opened and after it was read. A file still being written is left alone and reported
(`file_waiting`); a later run takes it whole. A file that changed while this run read it is
not archived (the move re-checks size and mtime): it stays in the inbox and the next run
reloads it whole (its rows are replaced by name). The marker moves with its file.

**Unmatched files.** A file in the inbox whose name fits no entity of its source (or carries
an impossible date), not hidden and older than the settle time, is moved to `quarantine/` with
a reason and reported (`file_unmatched`) — by the source's first entity only, so parallel
entity tasks do not report it twice. Directories other than `archive/`/`quarantine/` are left.

**Replace semantics.** The batch replaces the raw rows and quarantine rows of exactly the files
it read (`Extraction.replace_sources`, see `load.files`), so a file loads once however often it
is picked up. A file delivered twice under another name (WMS `…_RESEND.csv`) is recognised by its
sha256 (hashed only when another file in the window has the same size): it loads nothing, its
rows count as duplicates and it is archived.

**Re-delivery of a loaded name** (the name is in `archive/`). A *valid* re-delivery —
not empty (at least one record), every byte valid in the declared encoding, a readable header
with every required column, a line end after the last line — is a correction: its rows replace
the old file's rows (same name = same `_source`), and the archived original is kept as
`archive/<name>.superseded-<UTC stamp>` (an identical copy is simply replaced). A *broken* one
(empty, truncated, undecodable, missing a column, a link, over the size limit) never touches the
loaded rows or the archived original: it is not in `replace_sources`; its quarantine rows are
recorded under `<name> (re-delivery <id>)` and the copy moves to
`quarantine/<name>.redelivery-<id>` (`<id>`: its sha256 prefix, or its mtime when unreadable);
incident `redelivery_set_aside`. Whenever a move would overwrite a different file of the same
name in `archive/` or `quarantine/`, that file is kept as `<name>.superseded-<UTC stamp>`.

**Bad input.** Set aside whole (every line to `ops.quarantine` with the reason, the file to
`quarantine/`, incident `file_set_aside`): a file without a line end after its last line (cut
off mid-row), an empty file, a header that cannot be read or names a column twice, a file not
valid in the source's declared encoding (checked by one streaming strict decode, linear, in
bounded memory), a file in a non-UTF-8 source that is valid UTF-8 with non-ASCII bytes or a
UTF-8 BOM (GB18030 would accept most such bytes as other characters: "looks like UTF-8"),
and — unread — a file over `source.max_file_bytes`. A record with the wrong number of fields,
or whose value fails its declared type / required / minimum, goes to `ops.quarantine` with its
line number; so does a line over `source.max_record_bytes` (reason with its length, payload
cut to its first KiB; the line is never held whole: read with a bounded `readline` and
skipped to its end). When more than `max_reject_share` of one file's records are rejected,
the loader sets that file aside alone (the window's other files load) and
`on_file_rejected` moves it to `quarantine/`. A file whose header lacks a required column
stops the batch with `MissingColumnError` naming system, file and column (the file stays
where it is); an undeclared column is kept (`_extra`, `ops.schema_drift`). Reasons name the
file, line and length, never the file's content.

**Parsing.** Records are read with the `csv` module (the entity's delimiter, `"` quoting): a
quoted field may hold the delimiter or a line break; a record spanning lines is reported as
`lines N–M`. The plant's exports have no quotes and read exactly as plain `;`-split lines.

**Fast path.** Entities with the option `("load", "copy")` (the historian) hand the loader the
files themselves (`Extraction.delimited_files`): Postgres parses and casts their bytes in COPY,
and only a file it refuses (or one holding a quote or an over-long line) is read record by
record here (`load.historian`).
"""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path

from factory_platform.extract.incidents import Incident
from factory_platform.extract.load import (
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
PAYLOAD_HEAD_BYTES = 1024  # what is kept of an over-long line
SUPERSEDED = ".superseded-"
REDELIVERY = ".redelivery-"
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0))


class MissingColumnError(ValueError):
    """A delivered file lacks a column its entity declares required."""


class UnsafeInboxError(RuntimeError):
    """`archive/`, `quarantine/` (or a helper folder) of an inbox is not a real directory."""


class NotRegularFile(OSError):
    """A name that is not a regular file of its own (a link, a special file, hard-linked)."""


# --- safe file system access -------------------------------------------------------------------

def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def open_regular(path: Path | str):
    """Open a file for reading only if it is a regular file with a single link, never
    following a symbolic link (checked on the open descriptor: no race with the listing).
    FIFOs and devices are opened non-blocking, so the check never hangs on them."""
    name = os.path.basename(path)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, f"{name} is a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, f"{name} is a {_kind(st.st_mode)}")
        if st.st_nlink > 1:
            raise NotRegularFile(errno.EMLINK, f"{name} has {st.st_nlink} hard links (a "
                                 "delivered file must be a file of its own)")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def folder_of(inbox: Path, location: str) -> Path:
    return inbox if location == INBOX else inbox / location


def safe_folder(inbox: Path, location: str, create: bool = False) -> Path | None:
    """`<inbox>/<location>` if it is a real directory (None when absent and not created);
    a link or a file there raises `UnsafeInboxError` — nothing is read or moved through it."""
    folder = folder_of(inbox, location)
    if location == INBOX:
        return folder
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        if not create:
            return None
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
        st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeInboxError(
            f"{folder} is a {_kind(st.st_mode)}, not a directory: no file is read from or moved "
            "into it; make it a plain folder of the inbox")
    return folder


def write_text_safely(folder: Path, name: str, text: str) -> None:
    """Write `folder/name` without following a link planted under that name (temporary file
    created exclusively, then renamed over the name)."""
    tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0), 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, folder / name)


def _utc_stamp(ns: int | None = None) -> str:
    seconds = (time.time_ns() if ns is None else ns) / 1e9
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%dT%H%M%SZ")


# --- what is in the inbox ------------------------------------------------------------------------

@dataclass
class DropFile:
    """A delivered name found in the inbox or one of its folders (as listed, links not
    followed: `kind` is "file" for a regular file)."""

    name: str
    inbox: Path
    location: str
    period_start: datetime | None
    size: int
    mtime_ns: int = 0
    kind: str = "file"
    marker: str | None = None  # the completion marker's name, when the source declares one
    _sha256: str | None = field(default=None, repr=False)

    def folder(self, location: str) -> Path:
        return folder_of(self.inbox, location)

    @property
    def regular(self) -> bool:
        return self.kind == "file"

    @property
    def path(self) -> Path:
        """Where the name is now (a concurrent run may have moved it meanwhile); links are
        not followed."""
        for location in (self.location, *LOCATIONS):
            candidate = self.folder(location) / self.name
            if os.path.lexists(candidate):
                return candidate
        raise FileNotFoundError(f"{self.name} is no longer in {self.inbox} or its folders")

    def open(self):
        return open_regular(self.path)

    def sha256(self) -> str:
        """The content hash (computed once, streamed; regular files only)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            with self.open() as fh:
                while chunk := fh.read(READ_CHUNK_BYTES):
                    digest.update(chunk)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def unchanged(self, st: os.stat_result) -> bool:
        """Whether `st` (of the open file, or of the name) still shows what was listed."""
        return (stat.S_ISREG(st.st_mode) and st.st_size == self.size
                and st.st_mtime_ns == self.mtime_ns)


@dataclass(frozen=True)
class FileShape:
    """What the header says about a delimited file."""

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
    """The UTC start of the hour (with its `minute` group, the minute) or day a file name
    carries."""
    groups = match.groupdict()
    if groups.get("hour") or groups.get("day"):
        return _period(groups.get("hour"), groups.get("day"), groups.get("minute"))
    raise ValueError(f"file-name pattern {match.re.pattern!r} has no 'hour' or 'day' group")


@lru_cache(maxsize=1 << 16)
def _period(hour: str | None, day: str | None, minute: str | None = None) -> datetime:
    if hour:
        return datetime.strptime(hour + (minute or "00"), "%Y%m%dT%H%M").replace(tzinfo=UTC)
    return datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)


def _period_or_none(match: re.Match) -> datetime | None:
    try:
        return file_period(match)
    except ValueError:  # e.g. a 13th month: the name carries no real period
        if not (match.groupdict().get("hour") or match.groupdict().get("day")):
            raise
        return None


def _listing(inbox: Path, location: str) -> list[os.DirEntry]:
    """The visible entries of one folder (hidden names and the inbox's own folders skipped)."""
    folder = safe_folder(inbox, location)
    if folder is None:
        return []
    try:
        with os.scandir(folder) as entries:
            return [e for e in entries if not e.name.startswith(".")
                    and not (location == INBOX and e.name in (ARCHIVE, QUARANTINE))]
    except FileNotFoundError:
        return []


def _drop_file(entry: os.DirEntry, inbox: Path, location: str, period: datetime | None,
               marker: str | None) -> DropFile | None:
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    return DropFile(entry.name, inbox, location, period, st.st_size, st.st_mtime_ns,
                    _kind(st.st_mode), marker)


@dataclass
class Plan:
    """What one entity's run takes from its inbox (`plan_files`)."""

    inbox: Path
    found: list[DropFile]  # the window's names (one per name, by precedence), for duplicates
    chosen: list[DropFile]  # taken by this run, oldest first
    archived: set[str]  # names in archive/ (a chosen inbox file of such a name is a re-delivery)
    late: dict[str, datetime] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)
    unmatched: list[tuple[DropFile, str]] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)

    def is_redelivery(self, file: DropFile) -> bool:
        return file.location == INBOX and file.name in self.archived


def marker_name(source, name: str) -> str | None:
    return source.completion_marker.format(name=name) if source.completion_marker else None


def _marker_pattern(source) -> re.Pattern | None:
    if not source.completion_marker:
        return None
    head, _, tail = source.completion_marker.partition("{name}")
    return re.compile(re.escape(head) + "(.+)" + re.escape(tail))


def waiting_reason(source, file: DropFile, now_ns: int) -> str | None:
    """Why an inbox file is not taken yet (None: it is stable, or its marker is there)."""
    if file.marker and os.path.lexists(file.folder(INBOX) / file.marker):
        return None
    settle = source.settle_time.total_seconds()
    age = (now_ns - file.mtime_ns) / 1e9
    marker = f" or when {file.marker} appears beside it" if file.marker else ""
    if age < 0:
        return (f"modified {-age:.0f} s in the future (a clock ahead?); taken once it has "
                f"been unchanged for {settle:g} s{marker}")
    if age < settle:
        return (f"still being written: changed {age:.1f} s ago; a file is taken once unchanged "
                f"for {settle:g} s{marker}")
    return None


def plan_files(source, entity, window, done: Callable[[DropFile], bool] = lambda f: False,
               now_ns: int | None = None) -> Plan:
    """The files this run reads: its own interval's wherever they lie; lookback and older
    (late) files while they wait in the inbox (and are not `done` for this entity); inbox
    files only once stable. The source's first entity also collects the unmatched names."""
    inbox = inbox_of(source)
    now_ns = time.time_ns() if now_ns is None else now_ns
    regex = re.compile(entity.endpoint)
    listings = {location: _listing(inbox, location) for location in LOCATIONS}
    found: dict[str, DropFile] = {}
    for location in LOCATIONS:
        for entry in listings[location]:
            if entry.name in found:
                continue
            match = regex.fullmatch(entry.name)
            if not match:
                continue
            period = _period_or_none(match)
            if period is None or period >= window.end:
                continue
            if period < window.start and location != INBOX:
                continue
            file = _drop_file(entry, inbox, location, period, marker_name(source, entry.name))
            if file:
                found[entry.name] = file
    ordered = sorted(found.values(), key=lambda f: (f.period_start, f.name))
    plan = Plan(inbox, [], [], {e.name for e in listings[ARCHIVE]})
    for file in ordered:
        if file.location != INBOX:
            if window.interval_start <= file.period_start < window.interval_end:
                plan.chosen.append(file)
                plan.found.append(file)
            elif file.period_start >= window.start:
                plan.found.append(file)
            continue
        if done(file):
            continue
        why = waiting_reason(source, file, now_ns) if file.regular else None
        if why:
            plan.waiting[file.name] = why
            plan.incidents.append(Incident("file_waiting", file.name, why))
            continue
        plan.chosen.append(file)
        plan.found.append(file)
        if file.period_start < window.start:
            plan.late[file.name] = file.period_start
            plan.incidents.append(Incident("file_late", file.name, (
                f"its period {file.period_start:%Y-%m-%d %H:%M}Z arrived after the lookback "
                f"({source.lookback}) of the run for [{window.interval_start:%Y-%m-%d %H:%M}Z, "
                f"{window.interval_end:%Y-%m-%d %H:%M}Z); loaded now, the audit's window "
                "widened to its period")))
    if entity.name == source.entities[0].name:
        plan.unmatched = _unmatched(source, inbox, listings[INBOX], now_ns)
        plan.incidents.extend(Incident("file_unmatched", f.name, why) for f, why in plan.unmatched)
    return plan


def _unmatched(source, inbox: Path, entries: list[os.DirEntry],
               now_ns: int) -> list[tuple[DropFile, str]]:
    """Inbox names (not directories) that fit no entity of the source, older than the settle
    time — to be moved to quarantine/ and reported."""
    patterns = [(e.name, re.compile(e.endpoint)) for e in source.entities]
    markers = _marker_pattern(source)
    names = {e.name for e in entries}
    settle_ns = int(source.settle_time.total_seconds() * 1e9)
    unmatched = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            continue
        why = None
        matches = [(name, m) for name, regex in patterns if (m := regex.fullmatch(entry.name))]
        if matches:
            if any(_period_or_none(m) is not None for _, m in matches):
                continue
            why = (f"its name fits {source.system}.{matches[0][0]} but carries no valid date "
                   "or hour; moved to quarantine/")
        elif markers and (m := markers.fullmatch(entry.name)) and m.group(1) in names:
            continue  # a completion marker of a file still in the inbox
        file = _drop_file(entry, inbox, INBOX, None, None)
        if file is None or now_ns - file.mtime_ns < settle_ns:
            continue
        unmatched.append((file, why or (
            f"its name matches no file pattern of {source.system} "
            f"({', '.join(e.name for e in source.entities)}); moved to quarantine/")))
    return unmatched


def duplicates_of(chosen: list[DropFile], found: list[DropFile]) -> dict[str, str]:
    """name → earlier file with the same bytes, for each chosen file delivered twice (regular
    files only)."""
    found = [f for f in found if f.regular]
    order = {f.name: i for i, f in enumerate(found)}
    by_size: dict[int, list[DropFile]] = {}
    for f in found:
        by_size.setdefault(f.size, []).append(f)
    duplicates: dict[str, str] = {}
    for f in chosen:
        if not f.regular:
            continue
        for earlier in by_size.get(f.size, []):
            if order[earlier.name] >= order[f.name]:
                break
            try:
                if earlier.sha256() == f.sha256():
                    duplicates[f.name] = earlier.name
                    break
            except (NotRegularFile, FileNotFoundError):
                break
    return duplicates


# --- reading a delimited file ------------------------------------------------------------------

def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


@dataclass
class ByteScan:
    """One streaming pass over a file: lines, last byte, encoding validity."""

    size: int = 0
    newlines: int = 0
    last: bytes = b""
    decode_error: str | None = None
    looks_utf8: bool = False


def scan_bytes(fh, encoding: str) -> ByteScan:
    """Count lines and check the bytes decode strictly in `encoding` — chunk by chunk with an
    incremental decoder (linear time, memory of one chunk; ASCII chunks skip the decoder).
    For a non-UTF-8 encoding, also note whether the file is valid UTF-8 holding non-ASCII
    bytes (or a UTF-8 BOM): GB18030 would read such bytes as other characters."""
    scan = ByteScan()
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    sniff = None if _is_utf8(encoding) else codecs.getincrementaldecoder("utf-8")("strict")
    utf8_valid, non_ascii = True, False
    while chunk := fh.read(READ_CHUNK_BYTES):
        if scan.size == 0 and sniff and chunk.startswith(codecs.BOM_UTF8):
            non_ascii = True
        ascii_only = chunk.isascii()
        if scan.decode_error is None and not (ascii_only and not decoder.getstate()[0]):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                at = max(exc.start, 0)
                line = scan.newlines + chunk[:at].count(b"\n") + 1
                scan.decode_error = f"{exc.reason} at byte {scan.size + at} (line {line})"
        if sniff and utf8_valid:
            non_ascii = non_ascii or not ascii_only
            try:
                sniff.decode(chunk)
            except UnicodeDecodeError:
                utf8_valid = False
        scan.newlines += chunk.count(b"\n")
        scan.size += len(chunk)
        scan.last = chunk[-1:]
    if scan.decode_error is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            scan.decode_error = f"{exc.reason} at the end of the file"
    if sniff and utf8_valid:
        try:
            sniff.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8_valid = False
    scan.looks_utf8 = bool(sniff) and utf8_valid and non_ascii
    return scan


@dataclass
class Verdict:
    """What `examine` found: a shape to load, a reason to set the file aside, or a wait."""

    shape: FileShape | None = None
    lines: int = 0  # data lines
    problem: str | None = None
    readable: bool = True  # False: set aside without reading it
    payload_encoding: str | None = None
    waiting: str | None = None
    gone: bool = False  # moved away (by a concurrent run) since the listing: not this run's


def examine(source, entity, file: DropFile, delimiter: str, redelivery: bool) -> Verdict:
    """Decide whether a delivered name can load: regular, within the size limit, stable while
    read, not empty, whole, valid in the declared encoding, with a readable header (for a
    re-delivery also: every required column, at least one record)."""
    encoding = source.encoding
    if not file.regular:
        return Verdict(problem=f"{file.name} is a {file.kind}, not a regular file: not read, "
                               "not followed", readable=False)
    if file.size > source.max_file_bytes:
        return Verdict(problem=f"file is {file.size} bytes, over {source.system}'s limit of "
                               f"{source.max_file_bytes} bytes: not read", readable=False)
    try:
        fh = file.open()
    except NotRegularFile as exc:
        return Verdict(problem=f"{exc.strerror}: not read, not followed", readable=False)
    except FileNotFoundError:
        return Verdict(gone=True)
    with fh:
        before = os.fstat(fh.fileno())
        if file.location == INBOX and not file.unchanged(before):
            return Verdict(waiting="changed after it was listed; taken once stable")
        if before.st_size > source.max_file_bytes:
            return Verdict(problem=f"file is {before.st_size} bytes, over {source.system}'s "
                                   f"limit of {source.max_file_bytes} bytes: not read",
                           readable=False)
        scan = scan_bytes(fh, encoding)
        after = os.fstat(fh.fileno())
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or (
                scan.size != before.st_size):
            return Verdict(waiting="changed while this run read it; taken once stable")
        fh.seek(0)
        header = fh.readline(source.max_record_bytes + 1)
        data_offset = fh.tell()
    verdict = Verdict(lines=max(0, scan.newlines + (scan.last not in (b"", b"\n")) - 1),
                      payload_encoding=encoding)
    if not header.strip():
        verdict.problem = "empty file: no header line"
    elif scan.last != b"\n":
        verdict.problem = (f"file cut off mid-row: line {scan.newlines + 1} has no line end "
                           f"({scan.size} bytes); the whole file is quarantined")
    elif scan.looks_utf8:
        verdict.problem = f"looks like UTF-8, the source declares {encoding}"
        verdict.payload_encoding = "utf-8"
    elif scan.decode_error:
        verdict.problem = f"not valid {encoding}: {scan.decode_error}"
    elif not header.endswith(b"\n"):
        verdict.problem = (f"header line longer than {source.max_record_bytes} bytes "
                           f"({source.system}'s record limit)")
    if verdict.problem:
        return verdict
    text = header.rstrip(b"\r\n").decode(encoding).lstrip("\ufeff")
    try:
        columns = tuple(name.strip() for name in next(csv.reader([text], delimiter=delimiter)))
    except (csv.Error, StopIteration) as exc:
        verdict.problem = f"header cannot be read as {delimiter!r}-delimited text ({exc})"
        return verdict
    seen: dict[str, int] = {}
    for position, name in enumerate(columns, start=1):
        if name in seen:
            verdict.problem = (f"header names a column twice (columns {seen[name]} and "
                               f"{position})")
            return verdict
        seen[name] = position
    verdict.shape = FileShape(columns, data_offset, header.endswith(b"\r\n"), None)
    if redelivery:
        missing = [f.name for f in entity.fields if f.required and f.name not in columns]
        if missing:
            verdict.problem = f"no column '{missing[0]}', required by {source.system}.{entity.name}"
        elif verdict.lines == 0:
            verdict.problem = "no records (a header only)"
    return verdict


def check_required_columns(source, entity, file: DropFile, columns: tuple[str, ...]) -> None:
    """Fail clearly when the header lacks a required column (naming the columns the registry
    declares, never the header's own text)."""
    missing = [f.name for f in entity.fields if f.required and f.name not in columns]
    if missing:
        raise MissingColumnError(
            f"{source.system}: file {file.name} (in {file.folder(file.location)}) has no column "
            f"'{missing[0]}', required by {source.system}.{entity.name}"
            + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else "")
            + f"; the header has {len(columns)} columns"
        )


class _RecordTooLong(Exception):
    """A record spanning lines (an unclosed quote) ran over the record limit."""


class _Lines:
    """Decoded physical lines for `csv.reader`, read with a bound: a line over `limit` bytes
    is never held — its first KiB is kept, the rest skipped — and stands in as an empty line,
    so the record holding it is quarantined. Tracks where the current record began."""

    def __init__(self, fh, encoding: str, limit: int, first_number: int) -> None:
        self.fh, self.encoding, self.limit = fh, encoding, limit
        self.number = first_number - 1  # the last line handed out
        self.next_record()

    def next_record(self) -> None:
        self.start = self.number + 1
        self.size = 0
        self.parts: list[str] = []
        self.long: tuple[int, int, bytes] | None = None  # (line, length, first bytes)
        self.undecodable: str | None = None

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self.fh.readline(self.limit + 1)
        if not raw:
            raise StopIteration
        self.number += 1
        if len(raw) > self.limit and not raw.endswith(b"\n"):
            length, head, tail = len(raw), raw[:PAYLOAD_HEAD_BYTES], raw
            while more := self.fh.readline(READ_CHUNK_BYTES):
                length += len(more)
                tail = tail[-1:] + more
                if more.endswith(b"\n"):
                    break
            length -= 2 if tail.endswith(b"\r\n") else 1 if tail.endswith(b"\n") else 0
            self.long = self.long or (self.number, length, head)
            self.size += length
            return "\n"
        self.size += len(raw)
        if self.size > self.limit and self.number > self.start:
            raise _RecordTooLong
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:  # the file changed since it was checked
            text = raw.decode(self.encoding, "replace")
            self.undecodable = f"cannot decode the line as {self.encoding} ({exc.reason})"
        self.parts.append(text)
        return text

    def ref(self) -> str:
        return (f"line {self.number}" if self.number <= self.start
                else f"lines {self.start}–{self.number}")

    def text(self) -> str:
        return "".join(self.parts).rstrip("\r\n")


def read_records(file: DropFile, shape: FileShape, rejected: list, *, encoding: str,
                 delimiter: str, max_record_bytes: int,
                 on_changed: Callable[[DropFile], None] | None = None) -> Iterator[SourceRecord]:
    """Yield each record (`csv` module: the delimiter, `"` quoting); records that cannot be
    read go to `rejected` as (file, ref, reason, payload). Linear time, memory bounded by
    `max_record_bytes`. `on_changed` hears of a file that changed while it was read."""
    csv.field_size_limit(max(csv.field_size_limit(), max_record_bytes))
    width = len(shape.columns)
    with file.open() as fh:
        fh.seek(shape.data_offset)
        lines = _Lines(fh, encoding, max_record_bytes, first_number=2)
        while True:
            reader = csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True)
            try:
                for values in reader:
                    record = _record_or_reason(file, lines, values, width, shape, encoding,
                                               max_record_bytes)
                    if isinstance(record, SourceRecord):
                        yield record
                    else:
                        rejected.append(record)
                    lines.next_record()
                break
            except _RecordTooLong:
                rejected.append((file.name, f"lines {lines.start}–{lines.number}", (
                    f"record runs over {max_record_bytes} bytes across lines (an unclosed "
                    f"quote?); first {PAYLOAD_HEAD_BYTES} bytes kept"),
                    lines.text()[:PAYLOAD_HEAD_BYTES]))
                lines.next_record()
            except csv.Error as exc:
                rejected.append((file.name, lines.ref(),
                                 f"not a well-formed delimited record ({exc})",
                                 lines.text()[:max_record_bytes]))
                lines.next_record()
        if (file.location == INBOX and on_changed
                and not file.unchanged(os.fstat(fh.fileno()))):
            on_changed(file)


def _record_or_reason(file, lines: _Lines, values: list[str], width: int, shape: FileShape,
                      encoding: str, limit: int):
    ref = lines.ref()
    if lines.long:
        number, length, head = lines.long
        reason = (f"line {number} is {length} bytes, over the source's limit of {limit} "
                  f"bytes; its first {len(head)} bytes are kept")
        return file.name, ref, reason, head.decode(encoding, "replace")
    text = lines.text()
    if lines.undecodable:
        return file.name, ref, lines.undecodable, text
    if len(values) != width:
        return file.name, ref, f"{len(values)} fields where the header has {width}", text
    payload = {name: (value if value != "" else None)
               for name, value in zip(shape.columns, values)}
    return SourceRecord(source=file.name, record_ref=ref, payload=payload, raw_text=text)


# --- settling: archive/, quarantine/ -------------------------------------------------------------

def _same_bytes(a: Path, b: Path) -> bool:
    try:
        if os.lstat(a).st_size != os.lstat(b).st_size:
            return False
        digests = []
        for path in (a, b):
            digest = hashlib.sha256()
            with open_regular(path) as fh:
                while chunk := fh.read(READ_CHUNK_BYTES):
                    digest.update(chunk)
            digests.append(digest.digest())
        return digests[0] == digests[1]
    except (OSError, NotRegularFile):
        return False


def supersede(path: Path) -> Path:
    """Keep a file that a newer one of the same name replaces: `<name>.superseded-<UTC>` in
    the same folder (its `.reason.txt`, if any, goes along)."""
    stamp = _utc_stamp()
    target = path.with_name(f"{path.name}{SUPERSEDED}{stamp}")
    n = 1
    while os.path.lexists(target):
        n += 1
        target = path.with_name(f"{path.name}{SUPERSEDED}{stamp}-{n}")
    os.replace(path, target)
    reason = path.with_name(f"{path.name}.reason.txt")
    if os.path.lexists(reason):
        os.replace(reason, target.with_name(f"{target.name}.reason.txt"))
    log.info("%s kept as %s (a newer delivery of the name replaces it)", path, target.name)
    return target


def move_file(file: DropFile, destination: str, reason: str | None = None, *,
              as_name: str | None = None, check_unchanged: bool = True) -> bool:
    """Move a read name (a link or special file: the entry itself) to archive/ or quarantine/
    (with `<name>.reason.txt`). A regular file in the inbox that changed since it was listed
    is left there (a later run reloads it whole). A different file of the same name already
    in archive/ or quarantine/ is kept as `<name>.superseded-<UTC>`; an identical one is
    replaced. Returns whether the file moved (or already was in place)."""
    try:
        current = file.path
    except FileNotFoundError:
        log.warning("%s was moved away before it could be settled", file.name)
        return False
    in_inbox = current.parent == file.folder(INBOX)
    if in_inbox and file.regular and check_unchanged:
        try:
            if not file.unchanged(os.lstat(current)):
                log.warning("%s changed while it was read: left in the inbox, a later run "
                            "reloads it whole", file.name)
                return False
        except FileNotFoundError:
            return False
    target_dir = safe_folder(file.inbox, destination, create=True)
    target = target_dir / (as_name or file.name)
    if current != target:
        if os.path.lexists(target):
            if file.regular and _same_bytes(target, current):
                pass  # the same bytes: replacing loses nothing
            else:
                supersede(target)
        os.replace(current, target)
    if as_name is None:
        for other in (ARCHIVE, QUARANTINE):
            stale_dir = safe_folder(file.inbox, other)
            if other == destination or stale_dir is None:
                continue
            stale = stale_dir / file.name
            if stale != current and os.path.lexists(stale):
                if file.regular and _same_bytes(stale, target):
                    stale.unlink()
                else:
                    supersede(stale)
    quarantine = safe_folder(file.inbox, QUARANTINE, create=destination == QUARANTINE)
    if destination == QUARANTINE:
        write_text_safely(quarantine, f"{target.name}.reason.txt", (reason or "set aside") + "\n")
    elif quarantine is not None:
        (quarantine / f"{file.name}.reason.txt").unlink(missing_ok=True)
    if file.marker and in_inbox:
        marker = file.folder(INBOX) / file.marker
        if os.path.lexists(marker):
            os.replace(marker, target_dir / file.marker)
    return True


def describe(inbox: Path, chosen: list[DropFile]) -> str:
    """Source label for the audit: the folder and the files read."""
    if not chosen:
        return f"{inbox} (no files)"
    names = ", ".join(f.name for f in chosen[:3]) + (", …" if len(chosen) > 3 else "")
    return f"{inbox}: {len(chosen)} file(s): {names}"


def redelivery_id(file: DropFile, sha256: str | None) -> str:
    """A short id for a re-delivered copy: its sha256 prefix, or its mtime when unread."""
    return sha256[:12] if sha256 else _utc_stamp(file.mtime_ns)


def set_aside(extraction: Extraction, plan: Plan, file: DropFile, reason: str, *,
              readable: bool, encoding: str, sha256: str | None = None, per_line: bool = True,
              max_payload_bytes: int = 64 * 1024) -> str | None:
    """Record a file set aside whole; returns the name it gets in quarantine/ (None: its
    own). A broken re-delivery never touches the loaded name: its quarantine rows and its
    copy get a name of their own, and it is not in `replace_sources`."""
    if plan.is_redelivery(file):
        short = redelivery_id(file, sha256)
        extraction.set_aside.append(SetAsideFile(
            f"{file.name} (re-delivery {short})", str(file.path),
            f"re-delivery of a loaded file set aside, the loaded rows and the archived original "
            f"kept: {reason}", encoding, per_line=per_line, readable=readable,
            max_payload_bytes=max_payload_bytes))
        extraction.incidents.append(Incident("redelivery_set_aside", file.name, reason))
        return f"{file.name}{REDELIVERY}{short}"
    extraction.replace_sources.append(file.name)
    extraction.set_aside.append(SetAsideFile(file.name, str(file.path), reason, encoding,
                                             per_line=per_line, readable=readable,
                                             max_payload_bytes=max_payload_bytes))
    extraction.incidents.append(Incident("file_set_aside", file.name, reason))
    return None


def settle_unmatched(source, plan: Plan) -> None:
    for file, why in plan.unmatched:
        move_file(file, QUARANTINE, f"{source.system}: {why}", check_unchanged=True)


# --- the client ----------------------------------------------------------------------------------

def open_extraction(source, entity, window) -> Extraction:
    """Client entry point (see `extract.clients`): the entity's files of the window."""
    delimiter = entity.option("delimiter", ";")
    encoding = source.encoding
    plan = plan_files(source, entity, window)
    extraction = Extraction(records=(), source_label=describe(plan.inbox, plan.chosen),
                            replace_sources=[])
    extraction.incidents.extend(plan.incidents)
    stable = [f for f in plan.found if f.name not in plan.waiting]
    duplicate_of = duplicates_of(plan.chosen, stable)
    moves: dict[str, tuple[DropFile, str, str | None, str | None]] = {}
    changed: set[str] = set()
    rejected_files: set[str] = set()
    loadable: list[tuple[DropFile, FileShape]] = []

    def on_changed(file: DropFile) -> None:
        changed.add(file.name)
        extraction.incidents.append(Incident(
            "file_waiting", file.name, "changed while it was read: left in the inbox, the next "
                                       "run reloads it whole"))

    for file in plan.chosen:
        redelivery = plan.is_redelivery(file)
        verdict = examine(source, entity, file, delimiter, redelivery)
        if verdict.gone:
            log.info("%s: %s was moved away since the listing; left to the run that moved it",
                     source.system, file.name)
            plan.late.pop(file.name, None)
            continue
        if verdict.waiting:
            plan.waiting[file.name] = verdict.waiting
            plan.late.pop(file.name, None)
            extraction.incidents.append(Incident("file_waiting", file.name, verdict.waiting))
            continue
        if file.name in duplicate_of and verdict.readable:
            extraction.duplicates += verdict.lines
            log.info("%s: %s has the same bytes as %s; counted as duplicates", source.system,
                     file.name, duplicate_of[file.name])
            moves[file.name] = (file, ARCHIVE, None, None)
            continue
        if verdict.problem:
            sha = file.sha256() if redelivery and verdict.readable else None
            as_name = set_aside(extraction, plan, file, verdict.problem,
                                readable=verdict.readable,
                                encoding=verdict.payload_encoding or encoding, sha256=sha,
                                max_payload_bytes=source.max_record_bytes)
            moves[file.name] = (file, QUARANTINE,
                                f"{source.system}.{entity.name}: {verdict.problem}", as_name)
            continue
        check_required_columns(source, entity, file, verdict.shape.columns)
        extraction.replace_sources.append(file.name)
        loadable.append((file, verdict.shape))
        moves[file.name] = (file, ARCHIVE, None, None)
    late = [plan.late[f.name] for f in plan.chosen if f.name in plan.late]
    extraction.incidents = [i for i in extraction.incidents
                            if i.kind != "file_late" or i.subject in plan.late]
    extraction.covers_from = min(late) if late else None
    extraction.source_label = describe(plan.inbox, [f for f in plan.chosen
                                                    if f.name not in plan.waiting])

    read = partial(read_records, encoding=encoding, delimiter=delimiter,
                   max_record_bytes=source.max_record_bytes, on_changed=on_changed)
    if entity.option("load") == "copy":
        extraction.delimited_files = [
            DelimitedFile(name=file.name, path=str(file.path), columns=shape.columns,
                          data_offset=shape.data_offset, encoding=encoding, delimiter=delimiter,
                          crlf=shape.crlf, max_record_bytes=source.max_record_bytes,
                          records=partial(read, file, shape))
            for file, shape in loadable
        ]
    else:
        def records() -> Iterator[SourceRecord]:
            for file, shape in loadable:
                yield from read(file, shape, extraction.rejected)

        extraction.records = records()

    def settle() -> None:
        for name, (file, destination, reason, as_name) in moves.items():
            if name in rejected_files or name in changed:
                continue
            move_file(file, destination, reason, as_name=as_name)
        settle_unmatched(source, plan)

    def file_rejected(name: str, reason: str) -> None:
        rejected_files.add(name)
        if name in moves and name not in changed:
            move_file(moves[name][0], QUARANTINE, f"{source.system}.{entity.name}: {reason}")

    extraction.on_committed = settle
    extraction.on_file_rejected = file_rejected
    return extraction
