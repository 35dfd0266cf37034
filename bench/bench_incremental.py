"""P2: the cost of an incremental one-hour dbt run must not grow with history — one hour on
day 1 of a plant's history vs one hour on day 60 (goal ≤ 1.2×).

Side by side in one run, on a private PostgreSQL and plant (var/bench-incremental, ports
55452 / 18391 / 18392, started here and stopped at the end):

1. the default plant (12 machines, 5 tags each) generated for 60 days and served over its
   real interfaces (ERP/EAM databases, MES/QMS HTTP, file drops);
2. day 1 extracted through the platform's clients, `dbt run --full-refresh`, then the
   incremental one-hour run for 10:00–11:00 UTC of day 1, `--reps` times;
3. days 2–60 extracted, `dbt run --full-refresh`, the one-hour run for 10:00–11:00 of day 60.

The one-hour run is `dbt run --select config.materialized:incremental` with the hour as
interval vars: every model that processes a data interval (the volume path: facts over
confirmations, machine states, inspections, energy, historian readings, and the production
marts). Its cost is the models' summed execution time from run_results.json (dbt's constant
start-up left out, which would flatter the ratio); the wall time is printed beside it. Table
models (dimensions, small marts) are rebuilt whole by each transform run and are not part of
this figure; `whole_project_hour_run_day60_over_day1` reports the whole `dbt run` for
comparison.

Writes `incremental_day60_over_day1` (and the seconds behind it) into bench/results.json
(with the default `--days 60`; a shorter history only prints its table).

Usage: .venv/bin/python bench/bench_incremental.py [--days 60] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
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

from _cluster import start_provisioned_cluster
from _results import merge_results
from launcher.pgcluster import Cluster
from launcher.settings import (
    Instance,
    load_or_create_secrets,
    platform_environment,
)

INSTANCE = Instance(name="bench-incremental", pg_port=55452, api_port=18390, mes_port=18391,
                    qms_port=18392, opcua_port=48452)
BASE_CONFIG = ROOT / "include" / "plant_sim" / "configs" / "default.toml"
DBT = str(ROOT / ".venv" / "bin" / "dbt")
DBT_DIR = ROOT / "dbt_project"
HOUR_RUN_SELECT = "config.materialized:incremental"
DBT_ENV: dict[str, str] = {}  # the transformer's libpq variables, set by main()


def start_cluster(secret: dict[str, str]) -> Cluster:
    return start_provisioned_cluster(INSTANCE, secret)


def serve_plant(days: int, cluster: Cluster, api_key: str) -> tuple[subprocess.Popen, Path]:
    """Generate the world (default plant, `days` days), load its ERP/EAM databases and serve
    it; returns the server process and the world folder."""
    world = INSTANCE.var_dir / "world"
    config = INSTANCE.var_dir / "plant.toml"
    text = BASE_CONFIG.read_text(encoding="utf-8")
    config.write_text(re.sub(r"(?m)^days = \d+", f"days = {days}", text), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "include"))
    python = sys.executable
    subprocess.run([python, "-m", "plant_sim", "generate", "--config", str(config),
                    "--seed", "7", "--out", str(world)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([python, "-m", "plant_sim", "load", "--world", str(world),
                    "--truth-dsn", cluster.dsn("warehouse"), "--erp-dsn", cluster.dsn("erp"),
                    "--eam-dsn", cluster.dsn("eam")], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    from factory_platform.roles import apply_plant_privileges

    for system in ("erp", "eam"):  # the loader reads them; the publisher posts to the ERP
        apply_plant_privileges(cluster.dsn(system), system)
    inbox = INSTANCE.plant_dir / "inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    server = subprocess.Popen(
        [python, "-m", "plant_sim", "serve", "--world", str(world), "--inbox", str(inbox),
         "--mes-port", str(INSTANCE.mes_port), "--qms-port", str(INSTANCE.qms_port),
         "--opcua-port", str(INSTANCE.opcua_port), "--clock", "batch"],
        env=dict(env, PLANT_API_KEY=api_key),  # never on a command line
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            url = f"http://127.0.0.1:{INSTANCE.mes_port}/api/v1/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    return server, world
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulated plant did not start") from None
            time.sleep(0.3)


def first_shift_start(world: Path) -> datetime:
    import csv

    with open(world / "truth" / "shift_calendar.csv", encoding="utf-8") as fh:
        return min(datetime.fromisoformat(r["shift_start_at"]) for r in csv.DictReader(fh)
                   ).astimezone(UTC)


def extract(dsn: str, start: datetime, end: datetime) -> float:
    """Every system's entities over daily windows [start, end) through the platform's clients;
    snapshot entities (master data) once, at the last window. Returns the seconds taken."""
    from factory_platform.extract.run import extract_windows

    logging.getLogger("factory_platform").setLevel(logging.WARNING)  # not a line per batch
    started = time.monotonic()
    windows = []
    while start < end:
        windows.append((start, min(start + timedelta(days=1), end)))
        start += timedelta(days=1)
    from factory_platform.sources import all_sources

    for system in all_sources():  # every system of the source registry
        extract_windows(system, windows, dsn)
    return time.monotonic() - started


def dbt_run(*args: str, command: str = "run") -> tuple[float, float, dict[str, float]]:
    """`dbt <command> <args>` on the bench warehouse: (wall s, summed execution s, execution s
    per node)."""
    target = INSTANCE.var_dir / "dbt-target"
    started = time.monotonic()
    result = subprocess.run(
        [DBT, command, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
         "--target-path", str(target), "--threads", "1", *args],
        cwd=ROOT, env=dict(os.environ, **DBT_ENV, DBT_SEND_ANONYMOUS_USAGE_STATS="false"),
        capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"dbt {command} {' '.join(args)} failed:\n{result.stdout[-6000:]}")
    results = json.loads((target / "run_results.json").read_text())["results"]
    per_node = {r["unique_id"].rsplit(".", 1)[-1]: r["execution_time"] for r in results}
    return wall, sum(per_node.values()), per_node


def hour_vars(hour_start: datetime) -> str:
    return json.dumps({"interval_start": hour_start.isoformat(),
                       "interval_end": (hour_start + timedelta(hours=1)).isoformat()})


def measure_hour_runs(hour_start: datetime, reps: int) -> dict:
    """The incremental one-hour run (after one warm-up) `reps` times, and the whole project's
    `dbt run` for the same hour once."""
    selected = ("--select", HOUR_RUN_SELECT, "--vars", hour_vars(hour_start))
    dbt_run(*selected)  # warm-up: caches, and the hour's rows merged once already
    runs = [dbt_run(*selected) for _ in range(reps)]
    whole_wall, _, whole_models = dbt_run("--vars", hour_vars(hour_start))
    return {"wall_s": statistics.median(r[0] for r in runs),
            "models_s": statistics.median(r[1] for r in runs),
            "per_model_s": {m: statistics.median(r[2][m] for r in runs) for m in runs[0][2]},
            "whole_wall_s": whole_wall, "whole_models": len(whole_models)}


def history_rows(dsn: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("raw_scada.tag_values", "raw_mes.confirmations",
                          "raw_mes.machine_states", "raw_ems.meter_readings")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=int, default=60, help="days of plant history")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    secret = load_or_create_secrets(INSTANCE)
    # The components' connections (AIRFLOW_CONN_*) for the extractions; the libpq variables
    # (the transformer's, as make run's .env has them) only for dbt: the harness itself is the
    # superuser by its password file, which PGPASSWORD would override.
    environment = platform_environment(INSTANCE, secret)
    os.environ.update({k: v for k, v in environment.items() if not k.startswith("PG")})
    for name in ("PGPASSWORD", "PGUSER", "PGPASSFILE", "PGDATABASE", "PGHOST", "PGPORT"):
        os.environ.pop(name, None)
    DBT_ENV.update({k: v for k, v in environment.items() if k.startswith("PG")})
    cluster = start_cluster(secret)
    server = None
    try:
        from factory_platform.bootstrap import bootstrap_warehouse

        dsn = cluster.dsn("warehouse")
        server, world = serve_plant(args.days, cluster, secret["MES_API_KEY"])
        bootstrap_warehouse(dsn)
        first = first_shift_start(world)
        history_start = first.replace(hour=0) - timedelta(days=30)  # master data, ERP orders
        day1_end = first.replace(hour=0) + timedelta(days=1)
        last_day = first.replace(hour=0) + timedelta(days=args.days - 1)

        figures: dict[str, dict] = {}
        for label, (start, end), hour in (
            ("day 1", (history_start, day1_end), first.replace(hour=10)),
            (f"day {args.days}", (day1_end, last_day + timedelta(days=2)),
             last_day.replace(hour=10)),
        ):
            extract_s = extract(dsn, start, end)
            dbt_run(command="seed")  # the site list, code mappings
            full_s = dbt_run("--full-refresh")[0]
            figures[label] = measure_hour_runs(hour, args.reps) | {
                "rows": history_rows(dsn), "extract_s": extract_s, "full_refresh_s": full_s,
                "hour": hour}
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        cluster.stop()

    day1, later = figures["day 1"], figures[f"day {args.days}"]
    ratio = later["models_s"] / day1["models_s"]
    print(f"\nincremental one-hour run (`dbt run --select {HOUR_RUN_SELECT}`, "
          f"{len(day1['per_model_s'])} models), median of {args.reps}")
    print(f"{'history':<10} {'hour (UTC)':<18} {'historian rows':>15} {'models s':>9} "
          f"{'wall s':>7} {'whole run s':>12} {'full refresh s':>15}")
    for label, f in figures.items():
        print(f"{label:<10} {f['hour']:%Y-%m-%d %H:%M}  {f['rows']['raw_scada.tag_values']:>15,} "
              f"{f['models_s']:>9.2f} {f['wall_s']:>7.2f} {f['whole_wall_s']:>12.2f} "
              f"{f['full_refresh_s']:>15.1f}")
    print(f"day {args.days} / day 1 (models' execution time): {ratio:.2f}×   goal ≤ 1.2×")
    growth = sorted(day1["per_model_s"], reverse=True,
                    key=lambda m: later["per_model_s"][m] - day1["per_model_s"][m])
    print(f"models by growth (s, day 1 → day {args.days}): " + ", ".join(
        f"{m} {day1['per_model_s'][m]:.2f} → {later['per_model_s'][m]:.2f}" for m in growth[:5]))
    if args.days != 60:
        print("(not merged into results.json: its figure is the 60-day one)")
        return 0
    merge_results({
        "incremental_day60_over_day1": round(ratio, 3),
        "incremental_hour_day1_models_s": round(day1["models_s"], 3),
        "incremental_hour_day60_models_s": round(later["models_s"], 3),
        "incremental_hour_day60_over_day1_wall": round(later["wall_s"] / day1["wall_s"], 3),
        "whole_project_hour_run_day60_over_day1": round(
            later["whole_wall_s"] / day1["whole_wall_s"], 3),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
