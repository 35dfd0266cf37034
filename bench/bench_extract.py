"""Benchmark the file-drop extraction, side by side in one run, on a private PostgreSQL
(var/bench/pg, port 55451, started here and stopped at the end):

* historian load rows/s: our loader (the real `files` client + `load_batch`, fast path, fresh
  tables) vs a raw `COPY` of the same rows into a bare table (goal ≥ 0.8×) and vs pandas
  `DataFrame.to_sql` (goal ≥ 10×); also the reload rate (every row replaced);
* peak RSS of loading a 1× and a 10× historian file, each in its own subprocess (goal ≤ 1.2×);
* import time of each DAG file in dags/ in a fresh subprocess prepared as Airflow's DAG
  processor prepares its parsing child (Airflow loaded, the file's airflow.* imports
  pre-imported), goal ≤ 0.3 s.

Historian files come from the simulator CLI (a subprocess) at 30 machines × 20 tags, the scale
of a plant-month of 26 M rows. Prints a table and merges the figures into bench/results.json.

Usage: .venv/bin/python bench/bench_extract.py [--hours 24] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

from _results import merge_results
from bench_simulator import bench_config
from launcher.pgcluster import Cluster

WORK = ROOT / "var" / "bench"
PORT = 55451
FIRST_HOUR = datetime(2026, 10, 19, 4, tzinfo=UTC)  # the world's first shift start
BARE_DDL = "(ts timestamptz, machine_code text, tag text, value numeric, quality text)"


def start_cluster() -> Cluster:
    secret_file = WORK / "pg.secret"
    if not secret_file.exists():
        shutil.rmtree(WORK / "pg", ignore_errors=True)
        WORK.mkdir(parents=True, exist_ok=True)
        secret_file.write_text(secrets.token_urlsafe(16))
        secret_file.chmod(0o600)
    cluster = Cluster(WORK / "pg", PORT, "postgres", secret_file.read_text().strip())
    cluster.ensure_initialised()
    cluster.start()
    cluster.wait_ready()
    cluster.drop_database("bench")
    cluster.ensure_database("bench")
    return cluster


def generate_historian(hours: int) -> list[Path]:
    """Simulated days at 30 machines × 20 tags (simulator CLI); the first `hours` tag files."""
    world = WORK / "world"
    config = WORK / "bench_extract.toml"
    config.write_text(bench_config(days=max(1, -(-hours // 24))), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "plant_sim", "generate", "--config", str(config),
                    "--seed", "1", "--out", str(world)], check=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT / "include")),
                   stdout=subprocess.DEVNULL)
    return sorted((world / "drops" / "scada").glob("SCADA_TAGS_*.csv"))[:hours]


def data_rows(files: list[Path]) -> int:
    return sum(f.read_bytes().count(b"\n") - 1 for f in files)


def stage_inbox(files: list[Path], inbox: Path) -> None:
    """A fresh inbox holding copies of the files (the loader archives what it loads)."""
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.mkdir(parents=True)
    for f in files:
        deliver(f, inbox / f.name)


def deliver(source: Path, target: Path) -> None:
    """Copy a file into an inbox as a finished delivery of an hour ago: the loader takes a file
    only once it has been unchanged for its source's settle time."""
    shutil.copyfile(source, target)
    finished = time.time() - 3600
    os.utime(target, (finished, finished))


def load_with_our_loader(dsn: str, hours: int) -> dict:
    """The real extraction path for `hours` hourly files in one batch (system bench_scada)."""
    import dataclasses

    from factory_platform.extract.clients import Window, client_for
    from factory_platform.extract.load import load_batch
    from factory_platform.extract.run import load_target
    from factory_platform.sources import get_source

    source = dataclasses.replace(get_source("scada"), system="bench_scada",
                                 conn_id="bench_drops")
    entity = source.entity("tag_values")
    end = FIRST_HOUR + timedelta(hours=hours)
    window = Window(FIRST_HOUR, end, FIRST_HOUR, end)
    extraction = client_for(source.interface).open_extraction(source, entity, window)
    result = load_batch(dsn, load_target(source, entity), extraction,
                        interval_start=FIRST_HOUR, interval_end=end, window_start=FIRST_HOUR)
    return dataclasses.asdict(result)


def reset_bench_tables(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("drop schema if exists raw_bench_scada cascade")
        conn.execute(f"drop table if exists public.bare; create table public.bare {BARE_DDL}")
        conn.execute("delete from ops.quarantine where system = 'bench_scada'")
        conn.execute("delete from ops.load_audit where system = 'bench_scada'")


def raw_copy(dsn: str, files: list[Path]) -> int:
    """A plain COPY of the same data lines into the bare table, in one transaction."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        cursor = conn.cursor()
        with cursor.copy("copy public.bare from stdin (format text, delimiter ';')") as copy:
            for f in files:
                with open(f, "rb") as fh:
                    fh.readline()
                    while chunk := fh.read(1 << 20):
                        copy.write(chunk)
        conn.commit()
        return cursor.rowcount


def pandas_to_sql(dsn_url: str, files: list[Path]) -> tuple[int, float]:
    import pandas as pd
    import sqlalchemy

    engine = sqlalchemy.create_engine(dsn_url)
    started = time.perf_counter()
    rows = 0
    for f in files:
        frame = pd.read_csv(f, sep=";", parse_dates=["ts"])
        frame.to_sql("pandas_tags", engine, schema="public", if_exists="append", index=False,
                     chunksize=10_000)
        rows += len(frame)
    seconds = time.perf_counter() - started
    engine.dispose()
    return rows, seconds


def measure_throughput(dsn: str, dsn_url: str, files: list[Path], reps: int) -> dict:
    from factory_platform.warehouse import ensure_warehouse

    ensure_warehouse(dsn)
    hours = len(files)
    inbox = WORK / "inbox"
    os.environ["AIRFLOW_CONN_BENCH_DROPS"] = json.dumps(
        {"conn_type": "fs", "extra": {"path": str(inbox)}})
    copy_s, ours_s, reload_s = [], [], []
    rows = data_rows(files)
    for rep in range(reps + 1):  # interleaved, so machine noise hits both alike; rep 0 warms up
        reset_bench_tables(dsn)
        started = time.perf_counter()
        assert raw_copy(dsn, files) == rows
        copy_s.append(time.perf_counter() - started)
        stage_inbox(files, inbox)
        started = time.perf_counter()
        result = load_with_our_loader(dsn, hours)
        ours_s.append(time.perf_counter() - started)
        assert result["rows_loaded"] == rows, result
        started = time.perf_counter()  # again: files now in archive/, every row replaced
        result = load_with_our_loader(dsn, hours)
        reload_s.append(time.perf_counter() - started)
        assert result["rows_replaced"] == rows, result
        if rep == 0:
            copy_s.clear(), ours_s.clear(), reload_s.clear()
    sample = files[:2]
    to_sql_rows, to_sql_s = pandas_to_sql(dsn_url, sample)
    copy_rate = rows / statistics.median(copy_s)
    ours_rate = rows / statistics.median(ours_s)
    return {
        "rows": rows, "copy_rows_per_s": copy_rate, "load_rows_per_s": ours_rate,
        "reload_rows_per_s": rows / statistics.median(reload_s),
        "to_sql_rows_per_s": to_sql_rows / to_sql_s, "to_sql_rows": to_sql_rows,
    }


RSS_CHILD = """
import json, os, sys, dataclasses
sys.path.insert(0, {include!r}); sys.path.insert(0, {bench!r})
import bench_extract as b
print(json.dumps(b.load_with_our_loader({dsn!r}, 1)))
"""


def peak_rss_of_load(dsn: str, file_body: Path, env: dict[str, str]) -> tuple[float, int]:
    """Load one file (as a one-hour drop) in a child process; its peak RSS in MB and rows."""
    inbox = WORK / "rss_inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.mkdir(parents=True)
    deliver(file_body, inbox / f"SCADA_TAGS_ERF_{FIRST_HOUR:%Y%m%dT%H}00Z.csv")
    code = RSS_CHILD.format(include=str(ROOT / "include"), bench=str(ROOT / "bench"), dsn=dsn)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            env=dict(env, AIRFLOW_CONN_BENCH_DROPS=json.dumps(
                                {"conn_type": "fs", "extra": {"path": str(inbox)}})))
    _pid, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read().decode()
    proc.stdout.close()
    if status != 0:
        raise SystemExit(f"RSS child failed: {output}")
    return usage.ru_maxrss / 1024, json.loads(output.strip().splitlines()[-1])["rows_loaded"]


def measure_rss(dsn: str, files: list[Path], env: dict[str, str]) -> dict:
    """1× = one hourly file; 10× = ten hours of data under one header (10 × the rows)."""
    one = files[0]
    ten = WORK / "historian_10x.csv"
    with open(ten, "wb") as out:
        for i, f in enumerate(files[:10]):
            lines = f.read_bytes().split(b"\n", 1)
            out.write((lines[0] + b"\n") if i == 0 else b"")
            out.write(lines[1])
    results = {}
    for label, path in (("1x", one), ("10x", ten)):
        reset_bench_tables(dsn)
        results[label] = peak_rss_of_load(dsn, path, env)
    return {"rss_1x_mb": results["1x"][0], "rss_10x_mb": results["10x"][0],
            "rss_1x_rows": results["1x"][1], "rss_10x_rows": results["10x"][1]}


PARSE_CHILD = """
import sys, time, runpy, structlog
sys.path.insert(0, {include!r})
# As in Airflow's DAG processor: its manager has Airflow loaded and pre-imports the airflow.*
# modules a DAG file names ([dag_processor] parsing_pre_import_modules) before the child forks.
from airflow.dag_processing import processor
processor._pre_import_airflow_modules({path!r}, structlog.get_logger())
started = time.perf_counter()
runpy.run_path({path!r})
print(time.perf_counter() - started)
"""


def measure_dag_parse(env: dict[str, str], reps: int = 3) -> dict[str, float]:
    """Per DAG file, the median of `reps` imports, each in a fresh interpreter."""
    times = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        code = PARSE_CHILD.format(include=str(ROOT / "include"), path=str(path))
        runs = []
        for _ in range(reps):
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  env=env, check=False)
            if done.returncode != 0:
                print(f"  {path.name}: failed to import: {done.stderr.strip().splitlines()[-1:]}")
                break
            runs.append(float(done.stdout.strip().splitlines()[-1]))
        if runs:
            times[path.name] = statistics.median(runs)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hours", type=int, default=24, help="hourly historian files to load")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    cluster = start_cluster()
    try:
        dsn = cluster.dsn("bench")
        env = dict(os.environ, PYTHONPATH=str(ROOT / "include"),
                   AIRFLOW_HOME=str(WORK / "airflow"),
                   AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
                   AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__UNIT_TEST_MODE="False")
        os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
        files = generate_historian(args.hours)
        rate = measure_throughput(dsn, cluster.url("bench", "postgresql+psycopg"), files,
                                  args.reps)
        rss = measure_rss(dsn, files, env)
        parse = measure_dag_parse(env)
    finally:
        cluster.stop()
    figures = {
        "load_vs_copy_ratio": round(rate["load_rows_per_s"] / rate["copy_rows_per_s"], 3),
        "load_vs_to_sql_ratio": round(rate["load_rows_per_s"] / rate["to_sql_rows_per_s"], 1),
        "rss_10x_over_1x": round(rss["rss_10x_mb"] / rss["rss_1x_mb"], 3),
        "max_dag_parse_s": round(max(parse.values()), 3) if parse else None,
        "historian_load_rows_per_s": round(rate["load_rows_per_s"]),
        "historian_copy_rows_per_s": round(rate["copy_rows_per_s"]),
        "historian_reload_rows_per_s": round(rate["reload_rows_per_s"]),
        "historian_to_sql_rows_per_s": round(rate["to_sql_rows_per_s"]),
        "historian_bench_rows": rate["rows"],
        "historian_load_peak_rss_1x_mb": round(rss["rss_1x_mb"], 1),
        "historian_load_peak_rss_10x_mb": round(rss["rss_10x_mb"], 1),
    }
    print(f"\nhistorian: {rate['rows']:,} rows in {len(files)} hourly files "
          f"(30 machines × 20 tags), median of {args.reps}")
    print(f"{'measure':<44} {'value':>14} {'goal':>10}")
    table = [
        ("raw COPY into a bare table, rows/s", f"{rate['copy_rows_per_s']:,.0f}", ""),
        ("our loader (fresh load), rows/s", f"{rate['load_rows_per_s']:,.0f}", ""),
        ("our loader (reload, all rows replaced), rows/s",
         f"{rate['reload_rows_per_s']:,.0f}", ""),
        (f"pandas to_sql ({rate['to_sql_rows']:,} rows), rows/s",
         f"{rate['to_sql_rows_per_s']:,.0f}", ""),
        ("load / COPY", f"{figures['load_vs_copy_ratio']}×", "≥ 0.8×"),
        ("load / to_sql", f"{figures['load_vs_to_sql_ratio']}×", "≥ 10×"),
        (f"peak RSS 1× file ({rss['rss_1x_rows']:,} rows), MB", f"{rss['rss_1x_mb']:.1f}", ""),
        (f"peak RSS 10× file ({rss['rss_10x_rows']:,} rows), MB", f"{rss['rss_10x_mb']:.1f}", ""),
        ("peak RSS 10× / 1×", f"{figures['rss_10x_over_1x']}×", "≤ 1.2×"),
    ]
    for name, seconds in parse.items():
        table.append((f"import {name}", f"{seconds:.3f} s", ""))
    table.append(("max DAG import", f"{figures['max_dag_parse_s']} s", "≤ 0.3 s"))
    for name, value, goal in table:
        print(f"{name:<44} {value:>14} {goal:>10}")
    merge_results(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
