"""`make bench`: run every `bench/bench_*.py` in its own process, side by side in one run.

Each benchmark prints its table and merges its figures into `bench/results.json` (a flat JSON
object), so the file always holds the latest full run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main() -> int:
    failures = 0
    for script in sorted(BENCH_DIR.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        failures += subprocess.run([sys.executable, str(script)], check=False).returncode != 0
    results = BENCH_DIR / "results.json"
    if results.exists():
        print(f"\nresults: {results}\n{results.read_text()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
