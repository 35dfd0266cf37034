"""File drops: generated files wait in `<world>/drops/<system>/` and are copied into the inbox
(`<inbox>/<system>/`) by `serve` once the clock passes their `available_at`.

`<world>/drops/index.csv` lists every file: `available_at` (UTC Z), `system`, `file_name`.
"""

from __future__ import annotations

import csv
import shutil
import threading
from pathlib import Path
from typing import Any

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


class Dropper:
    """Copies due files into the inbox (atomically: temp name, then rename), once each.

    The ledger `<inbox>/.plant_sim_dropped` remembers what was delivered, so a restart does not
    deliver a file again after the platform has moved it to its archive.
    """

    def __init__(self, world: Path, inbox: Path, clock: Any) -> None:
        self.world = world
        self.inbox = inbox
        self.clock = clock
        self.index = (
            read_index(world) if (world / "drops" / "index.csv").exists() else []
        )
        self.ledger_path = inbox / ".plant_sim_dropped"
        self.done: set[str] = set()
        if self.ledger_path.exists():
            self.done = set(self.ledger_path.read_text(encoding="utf-8").split())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pos = 0

    def tick(self) -> int:
        """Deliver every due file; returns how many were delivered now."""
        now = self.clock.now()
        n = 0
        self.inbox.mkdir(parents=True, exist_ok=True)
        with open(self.ledger_path, "a", encoding="utf-8") as ledger:
            while self.pos < len(self.index) and self.index[self.pos][0] <= now:
                _at, system, name = self.index[self.pos]
                self.pos += 1
                key = f"{system}/{name}"
                if key in self.done:
                    continue
                dest_dir = self.inbox / system
                dest_dir.mkdir(parents=True, exist_ok=True)
                tmp = dest_dir / f".{name}.part"
                shutil.copyfile(self.world / "drops" / system / name, tmp)
                tmp.rename(dest_dir / name)
                ledger.write(key + "\n")
                self.done.add(key)
                n += 1
        return n

    def start(self, period_s: float = 1.0) -> None:
        """Deliver now, then keep delivering in a background thread."""
        self.tick()

        def loop() -> None:
            while not self._stop.wait(period_s):
                self.tick()

        self._thread = threading.Thread(target=loop, name="dropper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
