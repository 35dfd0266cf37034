"""`make bench`: run every `bench/bench_*.py` in its own process, side by side in one run.

Each benchmark prints its table and merges its figures into `bench/results.json` (a flat JSON
object), so the file always holds the latest full run.

Ctrl-C or SIGTERM stops the run: the benchmark running gets the signal once and is waited for
while it stops what it started (a platform, a cluster); the ones after it are not started. It
runs in its own process group, so a Ctrl-C reaches it only through this launcher, once: a second
signal would interrupt its clean-up, and subprocess.run would SIGKILL it 0.25 s after a Ctrl-C.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main() -> int:
    failures = 0
    stopping: list[int] = []
    running: list[subprocess.Popen] = []

    def stop(signum, _frame) -> None:
        if not stopping and running:
            running[0].send_signal(signum)
            print(f"\nsignal {signum}: waiting for {Path(running[0].args[-1]).name} to stop "
                  "what it started", flush=True)
        stopping.append(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for script in sorted(BENCH_DIR.glob("bench_*.py")):
        if stopping:
            break
        print(f"\n=== {script.name} ===", flush=True)
        running[:] = [subprocess.Popen([sys.executable, str(script)], process_group=0)]
        failures += running[0].wait() != 0
        running.clear()
    results = BENCH_DIR / "results.json"
    if results.exists():
        print(f"\nresults: {results}\n{results.read_text()}")
    return 130 if stopping else 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
