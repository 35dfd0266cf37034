"""Benchmark the plant simulator: a plant-month at 30 machines × 20 tags (≈26 M historian rows).

Each measurement runs `python -m plant_sim generate` as its own subprocess and reads that child's
peak RSS from `os.wait4`, so numbers are clean. Prints a table and merges
`sim_month_wall_s`, `sim_month_peak_rss_mb`, `sim_rss_28d_over_7d` into `bench/results.json`.

Usage: .venv/bin/python bench/bench_simulator.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import merge_results

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "include" / "plant_sim" / "configs" / "default.toml"


def bench_config(
    days: int, lines: int = 5, machines_per_line: int = 6, tags: int = 20
) -> str:
    """The default plant scaled to `lines` × `machines_per_line` machines and `tags` tags."""
    text = BASE_CONFIG.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^days = \d+", f"days = {days}", text)
    text = re.sub(r"(?m)^name = \"default\"", 'name = "bench"', text)
    text = re.sub(r"(?m)^machines = \d+", f"machines = {machines_per_line}", text)
    text = re.sub(r"(?m)^tags_per_machine = \d+", f"tags_per_machine = {tags}", text)
    blocks = text.split("[[lines]]")
    head, line_blocks = blocks[0], blocks[1:]
    rest = line_blocks[-1].split("[[products]]", 1)
    line_blocks[-1] = rest[0]
    tail = "[[products]]" + rest[1]
    extra = []
    for i in range(len(line_blocks), lines):
        src = line_blocks[i % len(line_blocks)]
        extra.append(re.sub(r'code = "ERF-L\d+"', f'code = "ERF-L{i + 1}"', src))
    all_lines = (line_blocks + extra)[:lines]
    return head + "".join("[[lines]]" + b for b in all_lines) + tail


def run_generate(days: int, out: Path, **kw: int) -> dict[str, float]:
    """Generate in a child process; return wall seconds, peak RSS (MB) and historian rows."""
    cfg = out.parent / f"bench_{days}d.toml"
    cfg.write_text(bench_config(days, **kw), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "include"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plant_sim",
            "generate",
            "--config",
            str(cfg),
            "--seed",
            "1",
            "--out",
            str(out),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"generate failed for {days} days (status {status})")
    rows = 0
    for path in (out / "drops" / "scada").glob("SCADA_TAGS_*.csv"):
        with open(path, "rb") as fh:
            rows += sum(1 for _ in fh) - 1
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "days": days,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "historian_rows": rows,
        "world_mb": round(size / 1e6, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--quick", action="store_true", help="3 lines × 4 machines × 5 tags (smoke)"
    )
    ap.add_argument(
        "--workdir", default=None, help="where worlds are written (default: a temp dir)"
    )
    args = ap.parse_args()
    kw = {"lines": 3, "machines_per_line": 4, "tags": 5} if args.quick else {}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sim_"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for days in (30, 7, 28):
            out = work / f"world_{days}d"
            results.append(run_generate(days, out, **kw))
            shutil.rmtree(out)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"{'days':>5} {'wall s':>8} {'peak RSS MB':>12} {'historian rows':>15} {'world MB':>9}"
    )
    for r in results:
        print(
            f"{r['days']:>5} {r['wall_s']:>8} {r['peak_rss_mb']:>12} {r['historian_rows']:>15,}"
            f" {r['world_mb']:>9}"
        )
    month, d7, d28 = results
    ratio = round(d28["peak_rss_mb"] / d7["peak_rss_mb"], 3)
    print(f"peak RSS 28 d / 7 d = {ratio} (flat = 1.0)")
    if args.quick:
        return 0
    merge_results(
        {
            "sim_month_wall_s": month["wall_s"],
            "sim_month_peak_rss_mb": month["peak_rss_mb"],
            "sim_rss_28d_over_7d": ratio,
            "sim_month_historian_rows": month["historian_rows"],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
