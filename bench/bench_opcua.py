"""OPC UA history into raw beside the CSV historian path, measured in the same run.

On a private PostgreSQL (var/bench-opcua, port 55466) provisioned as `make run` provisions its
own, the default plant (12 machines, seed 7) is generated and served on its batch clock: OPC UA
on :48466 (history: the 48 plant hours before the clock) and the SCADA historian's hourly CSV
exports in the instance's inbox. Over the same `--hours` plant hours (the last full hours of
production, inside the server's retention), through the platform's own task entry point
(`extract.run.extract_interval`, as the DAG tasks call it):

* **OPC UA**: `extract_opcua`'s tag history in the catch-up slices a history load uses (2
  hours, each with the source's 30-minute lookback): browse, HistoryRead raw of every tag (16
  nodes a request, continuation points followed), the bad-quality rule, COPY into
  raw_opcua.tag_values. `opcua_history_rows_per_s` = rows into raw (the lookback's re-read
  rows included: they are read and replaced again) per second of wall time;
  `opcua_history_read_values_per_s`: the HistoryRead alone (the client, no load), same hours;
* **CSV historian**: `extract_scada`'s tag values of the same hours, one hourly run each (the
  files client, the historian's byte COPY fast path): `scada_csv_rows_per_s_same_run`.

`opcua_over_csv_rows_per_s` is their ratio: what a shop-floor protocol costs against the file
path on the same machine at the same moment. Each path runs `--reps` times (median); the
plant server runs in its own process, as a real one would. A first pass of both paths (it fills
raw and the files' archive) is not measured; only the measured hours' historian files are left
in the inbox. Merges the figures into bench/results.json.

Usage: .venv/bin/python bench/bench_opcua.py [--hours 36] [--reps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

from _cluster import start_provisioned_cluster, use_platform_connections
from _results import merge_results
from launcher.settings import Instance, load_or_create_secrets

INSTANCE = Instance(name="bench-opcua", pg_port=55466, api_port=18466, mes_port=18467,
                    qms_port=18468, opcua_port=48466)
CONFIG = ROOT / "include" / "plant_sim" / "configs" / "default.toml"
SLICE = timedelta(hours=2)  # the opcua source's catch-up slice


def serve_plant() -> tuple[subprocess.Popen, Path, datetime]:
    """Generate the default plant and serve it (batch clock) with OPC UA; returns the server,
    the world folder and the plant clock."""
    world = INSTANCE.var_dir / "world"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "include"))
    subprocess.run([sys.executable, "-m", "plant_sim", "generate", "--config", str(CONFIG),
                    "--seed", "7", "--out", str(world)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    inbox = INSTANCE.plant_dir / "inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "plant_sim", "serve", "--world", str(world), "--inbox",
         str(inbox), "--mes-port", str(INSTANCE.mes_port), "--qms-port", str(INSTANCE.qms_port),
         "--opcua-port", str(INSTANCE.opcua_port), "--clock", "batch"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            url = f"http://127.0.0.1:{INSTANCE.mes_port}/api/v1/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                health = json.load(response)
            if health.get("status") == "ok":
                clock = datetime.fromisoformat(health["clock"])
                break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the simulated plant did not start")
        time.sleep(0.3)
    import socket

    while True:  # the OPC UA server starts after the HTTP APIs
        try:
            socket.create_connection(("127.0.0.1", INSTANCE.opcua_port), timeout=2).close()
            return server, world, clock
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the plant's OPC UA server did not start") from None
            time.sleep(0.3)


def keep_only_the_hours(start: datetime, end: datetime) -> None:
    """The historian files of the measured hours (and of the runs' 3-hour lookback) stay in
    the inbox; the plant's other files are set apart, so the first CSV run does not load the
    world's earlier days as late files."""
    import re

    inbox = INSTANCE.plant_dir / "inbox" / "scada"
    apart = INSTANCE.var_dir / "scada-not-measured"
    shutil.rmtree(apart, ignore_errors=True)
    apart.mkdir(parents=True)
    for path in inbox.glob("SCADA_*.csv"):
        hour = re.search(r"_(\d{8}T\d{2})00Z\.csv$", path.name)
        at = datetime.strptime(hour.group(1), "%Y%m%dT%H").replace(tzinfo=UTC) if hour else None
        if at is None or not start - timedelta(hours=3) <= at < end:
            path.rename(apart / path.name)


def last_production_hour(world: Path) -> datetime:
    import csv

    with open(world / "truth" / "shift_calendar.csv", encoding="utf-8") as fh:
        end = max(datetime.fromisoformat(r["shift_end_at"]) for r in csv.DictReader(fh))
    return end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def run_path(dsn: str, system: str, entity: str, spans) -> tuple[float, int]:
    """Every span through the task entry point; (seconds, rows loaded)."""
    from factory_platform.extract.run import extract_interval

    started = time.monotonic()
    rows = sum(extract_interval(system, entity, s, e, dsn=dsn, watermark="keep")["rows_loaded"]
               for s, e in spans)
    return time.monotonic() - started, rows


def read_only(start: datetime, end: datetime) -> tuple[float, int]:
    """The HistoryRead alone over [start, end) (the client, no load): (seconds, values)."""
    from factory_platform.extract.opcua import endpoint_for, read_history
    from factory_platform.sources import get_source

    endpoint = endpoint_for(get_source("opcua").conn_id)
    started = time.monotonic()
    history = asyncio.run(read_history(endpoint, start, end))
    return time.monotonic() - started, history.count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hours", type=int, default=36, help="plant hours per path (≤ 44)")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    secret = load_or_create_secrets(INSTANCE)
    use_platform_connections(INSTANCE, secret)
    logging.getLogger("factory_platform").setLevel(logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    cluster = start_provisioned_cluster(INSTANCE, secret)
    server = None
    try:
        from factory_platform.bootstrap import bootstrap_warehouse
        from factory_platform.extract.run import catchup_slices
        from factory_platform.sources import get_source

        dsn = cluster.dsn("warehouse")
        bootstrap_warehouse(dsn)
        served_at = time.monotonic()
        server, world, clock = serve_plant()
        end = last_production_hour(world)
        start = end - timedelta(hours=args.hours)
        if start - timedelta(minutes=30) < clock - timedelta(hours=48):
            raise SystemExit(f"--hours {args.hours}: [{start}, {end}) plus the lookback is "
                             f"not all in the server's 48 h before its clock {clock}")
        keep_only_the_hours(start, end)
        # the files client takes a file once it has not changed for the source's settle time
        settle = get_source("scada").settle_time.total_seconds() + 5
        time.sleep(max(0.0, settle - (time.monotonic() - served_at)))
        runs: dict[str, list[tuple[float, int]]] = {"opcua": [], "csv": [], "read": []}
        for rep in range(args.reps + 1):  # the paths alternate, so both see the same machine
            measured = {
                "opcua": run_path(dsn, "opcua", "tag_values",
                                  catchup_slices(start, end, SLICE, limit=1_000)),
                "csv": run_path(dsn, "scada", "tag_values",
                                catchup_slices(start, end, timedelta(hours=1), limit=1_000)),
                "read": read_only(start - timedelta(minutes=30), end),
            }
            print(f"{'warm-up' if rep == 0 else f'rep {rep}'}: " + ", ".join(
                f"{path} {rows:,} rows in {seconds:.1f} s" for path, (seconds, rows)
                in measured.items()), flush=True)
            if rep:  # the first pass fills the raw tables and the archive: not measured
                for path, figures in measured.items():
                    runs[path].append(figures)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        cluster.stop()

    def seconds_of(path: str) -> float:
        return statistics.median(seconds for seconds, _rows in runs[path])

    def rate(path: str) -> float:  # every rep moves the same rows
        return runs[path][0][1] / seconds_of(path)

    opcua, csv_rate, read = rate("opcua"), rate("csv"), rate("read")
    print(f"\nplant hours [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC, default plant "
          f"(12 machines), median of {args.reps}")
    print(f"{'path':<44} {'rows':>9} {'seconds':>8} {'rows/s':>9}")
    for label, path in (("OPC UA HistoryRead -> raw_opcua (2 h slices)", "opcua"),
                        ("CSV historian files -> raw_scada (1 h runs)", "csv"),
                        ("OPC UA HistoryRead alone (client, no load)", "read")):
        print(f"{label:<44} {runs[path][0][1]:>9,} {seconds_of(path):>8.2f} "
              f"{rate(path):>9,.0f}")
    print(f"OPC UA / CSV rows per second: {opcua / csv_rate:.2f}")
    merge_results({
        "opcua_history_rows_per_s": round(opcua),
        "opcua_history_read_values_per_s": round(read),
        "scada_csv_rows_per_s_same_run": round(csv_rate),
        "opcua_over_csv_rows_per_s": round(opcua / csv_rate, 3),
        "opcua_bench_plant_hours": args.hours,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
