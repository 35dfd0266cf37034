"""File drops: generated files wait in `<world>/drops/<system>/` and are copied into the inbox
(`<inbox>/<system>/`) by `serve` once the clock passes their `available_at` (later, in chunks or
again broken when delivery faults are configured, see `faults.py`).

`<world>/drops/index.csv` lists every file: `available_at` (UTC Z), `system`, `file_name`.
"""

from __future__ import annotations

import csv
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plant_sim.faults import Delivery, broken_bytes
from plant_sim.timeutil import iso, parse_iso_utc


class DropIndex:
    """Writer side: registers generated files with the instant they become available."""

    def __init__(self, world: Path) -> None:
        self.root = world / "drops"
        self.root.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.root / "index.csv", "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._w = csv.writer(self._fh, lineterminator="\n")
        self._w.writerow(["available_at", "system", "file_name"])
        self.files = 0

    def path(self, system: str, name: str) -> Path:
        """Where to write a file of `system` before registering it."""
        folder = self.root / system
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def register(self, system: str, name: str, available_at: int) -> None:
        """Record that `drops/<system>/<name>` appears in the inbox at `available_at`."""
        self._w.writerow([iso(available_at), system, name])
        self.files += 1

    def close(self) -> None:
        self._fh.close()


def read_index(world: Path) -> list[tuple[int, str, str]]:
    """(available_at epoch, system, file name), sorted by time."""
    with open(world / "drops" / "index.csv", encoding="utf-8", newline="") as fh:
        rows = [
            (parse_iso_utc(r["available_at"]), r["system"], r["file_name"])
            for r in csv.DictReader(fh)
        ]
    rows.sort()
    return rows


@dataclass
class _Write:
    """A file being written in place, chunk by chunk (fault `file_partial`)."""

    delivery: Delivery
    fh: Any
    data: bytes
    bounds: list[int]
    done_chunks: int
    next_at: float


class Dropper:
    """Delivers due files into the inbox once each, following a schedule (`faults.plan_deliveries`).

    A normal delivery is atomic (temp name `.<name>.part`, then rename). With delivery faults a
    file can also come late, be written in place in chunks (`partial`), or be re-delivered
    broken under the same name once the original has left the inbox. The ledger
    `<inbox>/.plant_sim_dropped` remembers what was delivered, so a restart does not deliver a
    file again after the platform has moved it to its archive. `stop()` finishes files being
    written and leaves no temp file behind.
    """

    def __init__(
        self,
        world: Path,
        inbox: Path,
        clock: Any,
        schedule: list[Delivery] | None = None,
        journal: Any = None,
    ) -> None:
        self.world = world
        self.inbox = inbox
        self.clock = clock
        self.journal = journal
        self.index = (
            read_index(world) if (world / "drops" / "index.csv").exists() else []
        )
        self.schedule = (
            schedule
            if schedule is not None
            else [Delivery(at, s, n, at) for at, s, n in self.index]
        )
        self.files = {f"{s}/{n}" for _at, s, n in self.index}
        self.ledger_path = inbox / ".plant_sim_dropped"
        self.done: set[str] = set()
        if self.ledger_path.exists():
            self.done = set(self.ledger_path.read_text(encoding="utf-8").split())
        self._stop = threading.Event()
        self.interrupted = False  # set by a signal handler: stop between two files
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self.pos = 0
        self.writing: list[_Write] = []
        self.waiting: list[
            Delivery
        ] = []  # broken re-deliveries due, original still there
        self._remove_stale_temp_files()

    # ---- delivery -----------------------------------------------------------------------

    def tick(self) -> int:
        """Deliver every due file (start due partial writes, write due chunks, re-deliver due
        broken files whose original has left the inbox); returns deliveries started now."""
        with self._lock:
            now = self.clock.now()
            n = 0
            self.inbox.mkdir(parents=True, exist_ok=True)
            while self.pos < len(self.schedule) and self.schedule[self.pos].at <= now:
                if self.interrupted or self._stop.is_set():
                    break
                d = self.schedule[self.pos]
                self.pos += 1
                if d.key in self.done:
                    continue
                if d.broken:
                    self.waiting.append(d)
                    continue
                if d.mode == "partial":
                    self._start_write(d)
                else:
                    self._copy(d)
                n += 1
            self._advance_writes()
            for d in list(self.waiting):
                if self._redeliver_broken(d):
                    self.waiting.remove(d)
            return n

    def _src(self, d: Delivery) -> Path:
        return self.world / "drops" / d.system / d.name

    def _dest(self, d: Delivery) -> Path:
        folder = self.inbox / d.system
        folder.mkdir(parents=True, exist_ok=True)
        return folder / d.name

    def _mark(self, key: str) -> None:
        with open(self.ledger_path, "a", encoding="utf-8") as ledger:
            ledger.write(key + "\n")
        self.done.add(key)

    def _atomic_write(self, dest: Path, data: bytes | None, src: Path | None) -> None:
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            if src is not None:
                shutil.copyfile(src, tmp)
            else:
                tmp.write_bytes(data or b"")
            tmp.rename(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _copy(self, d: Delivery) -> None:
        dest = self._dest(d)
        self._atomic_write(dest, None, self._src(d))
        # A whole file carries the time its exporter finished it: its delivery instant on the
        # plant clock (never later than now). A backlog delivered at once when the plant starts
        # (its history, the batch clock) is then as old as it claims, as in a real inbox; a
        # reader that waits for files to settle takes it at once.
        finished = min(float(d.at), time.time())
        os.utime(dest, (finished, finished))
        self._mark(d.key)
        self._journal_late(d)

    def _journal_late(self, d: Delivery) -> None:
        if d.late and self.journal is not None:
            self.journal.record(
                "file_late",
                d.system,
                "files",
                file_name=d.name,
                detail=f"due {iso(d.due)}, delivered {(d.at - d.due) / 3600:g} h late",
                once=True,
            )

    def _start_write(self, d: Delivery) -> None:
        data = self._src(d).read_bytes()
        bounds = [len(data) * i // d.chunks for i in range(1, d.chunks + 1)]
        fh = open(self._dest(d), "wb")  # noqa: SIM115 - kept open while the file grows
        try:
            fh.write(data[: bounds[0]])
            fh.flush()
        except BaseException:
            fh.close()
            raise
        self.writing.append(
            _Write(d, fh, data, bounds, 1, time.monotonic() + d.chunk_seconds)
        )
        if self.journal is not None:
            self.journal.record(
                "file_partial",
                d.system,
                "files",
                file_name=d.name,
                detail=f"written in place in {d.chunks} chunks {d.chunk_seconds:g} s apart, "
                f"{len(data)} bytes",
                once=True,
            )

    def _advance_writes(self, finish: bool = False) -> None:
        """Write the chunks that are due (all of them with `finish`)."""
        for w in list(self.writing):
            while w.done_chunks < len(w.bounds) and (
                finish or time.monotonic() >= w.next_at
            ):
                i = w.done_chunks
                w.fh.write(w.data[w.bounds[i - 1] : w.bounds[i]])
                w.fh.flush()
                w.done_chunks += 1
                w.next_at = time.monotonic() + w.delivery.chunk_seconds
            if w.done_chunks == len(w.bounds):
                w.fh.close()
                self.writing.remove(w)
                self._mark(w.delivery.key)
                self._journal_late(w.delivery)

    def _redeliver_broken(self, d: Delivery) -> bool:
        """Deliver the broken copy once the original is delivered and gone from the inbox
        (picked up), so the original records can never be lost by it."""
        original = f"{d.system}/{d.name}"
        if d.key in self.done:
            return True
        if original not in self.done or (self.inbox / d.system / d.name).exists():
            return False
        data = broken_bytes(self._src(d).read_bytes(), d.mode)
        self._atomic_write(self._dest(d), data, None)
        self._mark(d.key)
        if self.journal is not None:
            size = self._src(d).stat().st_size
            what = (
                f"re-delivered truncated: {len(data)} of {size} bytes"
                if d.mode == "truncated"
                else f"re-delivered empty (0 of {size} bytes)"
            )
            self.journal.record(
                "file_broken_redelivery",
                d.system,
                "files",
                file_name=d.name,
                detail=what,
                once=True,
            )
        return True

    def _remove_stale_temp_files(self) -> None:
        """A process killed hard (SIGKILL) may have left `.<name>.part` files: remove them."""
        for system in {s for _at, s, _n in self.index}:
            folder = self.inbox / system
            if folder.is_dir():
                for tmp in folder.glob(".*.part"):
                    tmp.unlink(missing_ok=True)

    # ---- status and threads -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Delivery progress for `/api/v1/health`: `complete` is true once every file due by
        the clock is wholly in the inbox (or was delivered before and archived)."""
        with self._lock:
            now = self.clock.now()
            due = [d for d in self.schedule if d.at <= now]
            pending = sum(1 for d in due if not d.broken and d.key not in self.done)
            waiting = sum(1 for d in due if d.broken and d.key not in self.done)
            delivered = len(self.files & self.done)
            writing = len(self.writing)
        return {
            "files": len(self.files),
            "due": sum(1 for d in due if not d.broken),
            "delivered": delivered,
            "pending": pending,
            "writing": writing,
            "redeliveries_waiting": waiting,
            "complete": pending == 0,
        }

    def interrupt(self) -> None:
        """Ask a running `tick()` to return after the file it is delivering (signal-safe: no
        lock taken). `stop()` still has to be called."""
        self.interrupted = True

    def start(self, period_s: float = 1.0) -> None:
        """Deliver now, then keep delivering in a background thread."""
        self.tick()
        if self.interrupted:
            return

        def loop() -> None:
            while True:
                wait = period_s
                with self._lock:
                    if self.writing:
                        nxt = min(w.next_at for w in self.writing)
                        wait = min(wait, max(0.01, nxt - time.monotonic()))
                if self._stop.wait(wait):
                    return
                self.tick()

        self._thread = threading.Thread(target=loop, name="dropper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop delivering: the loop ends, files being written are finished at once."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._lock:
            self._advance_writes(finish=True)
