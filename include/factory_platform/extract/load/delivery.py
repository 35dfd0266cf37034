"""What a client hands the loader for one batch: the records with where each came from, and
for file drops the files set aside whole and the files for the historian's byte COPY.

A delivered file is only ever opened by `open_regular`: never through a link, and only when
it is a regular file, whatever the client saw when it listed it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from factory_platform.extract.incidents import Incident

COPY_CHUNK_BYTES = 1 << 20

# A record that cannot load, as ops.quarantine keeps it: (source, record_ref, reason, payload).
QuarantinedRecord = tuple[str, str, str, str | None]


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
    rejected: list[QuarantinedRecord] = field(default_factory=list)
    duplicates: int = 0
    on_committed: Callable[[], None] | None = None  # e.g. move files to the archive
    # File drops only (used when `replace_sources` is set; see `load.files`):
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

    def reason_for(self, ref: str) -> str:
        """A line's quarantine reason: the file's, after the line's own when it had one."""
        if ref in self.line_reasons:
            return f"{self.line_reasons[ref]} — {self.reason}"
        return self.reason

    def lines(self) -> Iterator[tuple[str, str | None]]:
        """(record_ref, raw payload) of each data line (or of the whole file, or only its name
        when it must not be read). Lines are read with a bound: a line longer than the payload
        limit is kept cut, and the rest of it skipped, in constant memory."""
        if not self.readable:
            yield "file", None
            return
        with open_regular(self.path) as fh:
            if not self.per_line:
                data = fh.read(self.max_payload_bytes + 1)
                text = data[:self.max_payload_bytes].decode(self.encoding, "replace")
                yield "file", text + (" … [cut]" if len(data) > self.max_payload_bytes else "")
                return
            number = 0
            while True:
                line = fh.readline(self.max_payload_bytes)
                if not line:
                    return
                number += 1
                cut = not line.endswith(b"\n")
                if cut:  # skip the rest of an over-long line without holding it
                    while (more := fh.readline(COPY_CHUNK_BYTES)) and not more.endswith(b"\n"):
                        pass
                if number > self.header_lines:
                    text = line.rstrip(b"\r\n").decode(self.encoding, "replace")
                    yield f"line {number}", text + (" … [cut]" if cut and more else "")


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


def open_regular(path: str) -> IO[bytes]:
    """Open a delivered file for reading without following a link, and only if it is a
    regular file (a file swapped for a link or a FIFO after the client checked it is refused)."""
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")
