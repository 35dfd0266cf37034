"""Benchmark the CeleryExecutor's scale-out: `celery_2_over_1_workers` = the wall time of one
plant-day of extraction on 1 Celery worker divided by the same on 2 workers, each worker with the
same concurrency, on this machine.

The extraction is every system's `extract_<system>` DAG as an Airflow backfill over the same
plant hours (`--hours 24`: 24 hourly runs of ERP, EAM, WMS, SCADA, EMS; 96 runs of MES and QMS,
whose interval is 15 minutes; PLM's daily run), all created at once, run by the real
scheduler and `airflow celery worker` processes as `make run EXECUTOR=celery` starts them, in
the plant pools of the source registry. The plant (the small test world without its injected
defects, batch clock: every record and file is there) answers through `plant_sim.latency`, a
relay that delays every request to the MES and QMS APIs and every round trip to the ERP's and
EAM's PostgreSQL by `--latency-ms` (50 ms); the warehouse is reached directly. Between the two measurements raw,
the load bookkeeping, the plant's file drops and the backfill runs are reset, so both measure
the same work from the same start. CPU use is the machine's busy time (/proc/stat) over each
measurement, in cores.

Why no defects: the bench measures the executor, not the quality path (tests/faults and `make
chaos` do). With the defects, a 15-minute MES window whose only record is invalid is refused
(1 of 1 rejected > 10 %) and retried with backoff — the same in both measurements, but the
retry waits are a fixed tail that no worker shortens. Why the runs are deleted: reprocessing a
run continues its tasks' try numbers, so the second measurement's retries waited 2^3–2^4 times
longer (measured 2026-12-03: 620 s of a 2,142 s measurement were that tail).

Its own instance (var/bench-celery): PostgreSQL 127.0.0.1:55481, API :18880, MES :18881,
QMS :18882, Redis :56490, relays :28881 (MES), :28882 (QMS), :25481 (plant databases).

What bounds it: a whole plant-day is 1,836 task instances (514 runs, most of them MES and QMS
windows with a few records) of 0.5–1.3 s each, but a worker slot is held ~3.4 s per task
instance (Celery hand-over, the task runner's start-up, the execution API, 50 ms per plant
request) while the machine's CPU stays mostly idle (0.51 cores busy with 1 worker): the slots,
not the cores, are the limit, so a second worker's slots add most of their throughput (steady
rate 33 → 59 task instances a minute). Measured 2026-12-03, `--hours 24`, the machine otherwise
quiet (≈ 2 min of niced tests in the 1-worker half): 1 worker 3,409 s at 0.53 cores, 2 workers 1,879 s at 0.75 cores — 1.81 (an earlier run
with niced tests beside its 2-worker half gave 1.55). A plant-day takes ~57 min on 1 worker and
~31 min on 2: `make bench` runs 6 plant hours by default (`--hours 24` for the
day). Measured 2026-12-02, 2 plant hours (168 task instances, ERP-heavy):
1 worker 443 s at 1.15 cores busy, 2 workers 274 s at 1.58 cores — 1.62.

Usage: .venv/bin/python bench/bench_celery.py [--hours 6] [--concurrency 2] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

from _cluster import start_provisioned_cluster
from _results import merge_results
from launcher import processes
from launcher.redisserver import RedisServer
from launcher.settings import (
    Executor,
    Instance,
    load_or_create_secrets,
    plant_passfile,
    platform_environment,
    role_dsn,
    service_environment,
)

INSTANCE = Instance(name="bench-celery", pg_port=55481, api_port=18880, mes_port=18881,
                    qms_port=18882, redis_port=56490, opcua_port=48481)
RELAY = {"mes": 28881, "qms": 28882, "pg": 25481}
PLANT_CONFIG = ROOT / "include" / "plant_sim" / "configs" / "small.toml"
VENV_BIN = Path(sys.executable).parent
AIRFLOW = str(VENV_BIN / "airflow")


@contextlib.contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait until the block (a clean-up they would cut short) is done, then
    act as they would have."""
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


def stop_plant(plant: list[subprocess.Popen]) -> None:
    """The plant and its relay (started here, not as services: no marker finds them later)."""
    for proc in plant:
        proc.terminate()
    for proc in plant:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_busy_seconds() -> float:
    """Busy CPU time of the whole machine since boot (every core), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def relayed(env: dict[str, str]) -> dict[str, str]:
    """The platform's plant connections through the latency relays (the warehouse direct)."""
    env = dict(env)
    for key, port in (("AIRFLOW_CONN_MES_API", INSTANCE.mes_port),
                      ("AIRFLOW_CONN_QMS_API", INSTANCE.qms_port)):
        system = key.split("_")[2].lower()
        env[key] = env[key].replace(f":{port}", f":{RELAY[system]}")
    for key in ("AIRFLOW_CONN_ERP_DB", "AIRFLOW_CONN_EAM_DB"):
        env[key] = env[key].replace(f":{INSTANCE.pg_port}/", f":{RELAY['pg']}/")
    return env


def prepare_plant(secret: dict[str, str], cluster) -> tuple[Path, datetime]:
    """The small world, generated and loaded into the plant databases; returns (world, the
    start of its first full production day)."""
    from factory_platform import roles
    from factory_platform.roles import apply_plant_privileges

    world = INSTANCE.var_dir / "world"
    passfile = plant_passfile(INSTANCE, secret)
    env = plant_env(secret)
    config = INSTANCE.var_dir / "bench-world.toml"
    config.write_text(without_defects(PLANT_CONFIG.read_text(encoding="utf-8")), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "plant_sim", "generate", "--config", str(config),
                    "--seed", "42", "--out", str(world)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "plant_sim", "load", "--world", str(world),
                    "--truth-dsn", role_dsn(INSTANCE, roles.PLANT_TRUTH, "warehouse", passfile),
                    "--erp-dsn", role_dsn(INSTANCE, roles.PLANT_ERP, "erp", passfile),
                    "--eam-dsn", role_dsn(INSTANCE, roles.PLANT_EAM, "eam", passfile)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    for system in ("erp", "eam"):
        apply_plant_privileges(cluster.dsn(system), system)
    with open(world / "truth" / "shift_calendar.csv", encoding="utf-8") as fh:
        first = min(datetime.fromisoformat(r["shift_start_at"]) for r in csv.DictReader(fh))
    first = first.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return world, first


def without_defects(config_text: str) -> str:
    """The plant configuration with its `[defects]` table removed (every rate 0)."""
    kept, skipping = [], False
    for line in config_text.splitlines(keepends=True):
        header = line.strip()
        if header.startswith("[") and not header.startswith("[["):
            skipping = header == "[defects]"
        elif header.startswith("[["):
            skipping = False
        if not skipping:
            kept.append(line)
    return "".join(kept)


def plant_env(secret: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AIRFLOW"))}
    return {**env, "PYTHONPATH": str(ROOT / "include"), "PLANT_API_KEY": secret["MES_API_KEY"]}


def start_plant(world: Path, secret: dict[str, str], latency_ms: float) -> list[subprocess.Popen]:
    """Serve the world with a fresh inbox (every file dropped again) behind the relays."""
    inbox = INSTANCE.plant_dir / "inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    env = plant_env(secret)
    server = subprocess.Popen(
        [sys.executable, "-m", "plant_sim", "serve", "--world", str(world), "--inbox",
         str(inbox), "--mes-port", str(INSTANCE.mes_port), "--qms-port",
         str(INSTANCE.qms_port), "--opcua-port", str(INSTANCE.opcua_port), "--clock", "batch"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay = subprocess.Popen(
        [sys.executable, "-m", "plant_sim.latency", "--delay-ms", str(latency_ms),
         "--route", f"127.0.0.1:{RELAY['mes']}=127.0.0.1:{INSTANCE.mes_port}",
         "--route", f"127.0.0.1:{RELAY['qms']}=127.0.0.1:{INSTANCE.qms_port}",
         "--route", f"127.0.0.1:{RELAY['pg']}=127.0.0.1:{INSTANCE.pg_port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import json
    import urllib.request

    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{RELAY['mes']}/api/v1/health",
                                            timeout=2) as response:
                    if json.load(response).get("status") == "ok":
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the simulated plant did not start") from None
                time.sleep(0.3)
    except BaseException:
        stop_plant([server, relay])
        raise
    time.sleep(2)  # the batch clock drops every file at start
    return [server, relay]


def reset_warehouse(cluster) -> None:
    """Empty raw and the extraction's bookkeeping (the same work for every measurement)."""
    import psycopg

    with psycopg.connect(cluster.dsn("warehouse")) as conn:
        tables = conn.execute("select schemaname, tablename from pg_tables "
                              "where schemaname like 'raw\\_%'").fetchall()
        for schema, table in tables:
            conn.execute(f'truncate "{schema}"."{table}"')
        conn.execute("truncate ops.load_audit, ops.quarantine, ops.extract_watermark, "
                     "ops.source_incident")


def extraction_dags() -> list[str]:
    from factory_platform.sources import all_sources

    return [source.dag_id for source in all_sources().values()]


def set_paused(dag_ids: list[str]) -> None:
    """Only the extraction DAGs run (the transform would follow their assets)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        for model in session.query(DagModel):
            model.is_paused = model.dag_id not in dag_ids


def delete_backfill_runs(dag_ids: list[str]) -> None:
    """Forget the previous measurement's backfill runs (and their task instances and tries), so
    the next one starts from try 1, as the first did."""
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id.in_(dag_ids),
                                            DagRun.backfill_id.is_not(None)).all()
        for run in runs:
            session.delete(run)  # cascades to its task instances and their history
        session.flush()
        session.query(BackfillDagRun).delete(synchronize_session=False)
        session.query(Backfill).delete(synchronize_session=False)


def end_unfinished_runs(dag_ids: list[str]) -> None:
    """Runs a previous, interrupted bench left queued or running on this instance's metadata
    (its backfills, or before the schedule was off, its scheduled runs) would take worker
    slots: they are ended, not measured."""
    from airflow.models.backfill import Backfill
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import timezone
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Backfill).filter(Backfill.completed_at.is_(None)).update(
            {"completed_at": timezone.utcnow(), "is_paused": True})
        runs = session.query(DagRun.dag_id, DagRun.run_id).filter(
            DagRun.dag_id.in_(dag_ids), DagRun.state.in_(("queued", "running"))).all()
        for dag_id, run_id in runs:
            session.query(DagRun).filter(DagRun.dag_id == dag_id,
                                         DagRun.run_id == run_id).update({"state": "failed"})
            session.query(TaskInstance).filter(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
                TaskInstance.state.notin_(("success", "failed", "skipped"))).update(
                {"state": "failed"}, synchronize_session=False)


def run_backfills(dag_ids: list[str], start: datetime, end: datetime) -> list[int]:
    """One backfill per DAG over [start, end); a DAG with no interval in it (PLM's daily run in
    a range of a few hours) gets none."""
    from airflow.models.backfill import (
        NoBackfillRunsToCreate,
        ReprocessBehavior,
        _create_backfill,
    )

    ids = []
    for dag_id in dag_ids:
        try:
            ids.append(_create_backfill(
                dag_id=dag_id, from_date=start, to_date=end, max_active_runs=100, reverse=False,
                dag_run_conf=None, triggering_user_name="bench",
                reprocess_behavior=ReprocessBehavior.COMPLETED).id)
        except NoBackfillRunsToCreate:
            continue
    return ids


def wait_backfills(ids: list[int], timeout_s: float) -> dict[str, int]:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    deadline = time.monotonic() + timeout_s
    while True:
        with create_session() as session:
            states = [str(s) for (s,) in session.query(DagRun.state).filter(
                DagRun.backfill_id.in_(ids))]
            if states and all(s in ("success", "failed") for s in states):
                tis = session.query(TaskInstance).join(
                    DagRun, (DagRun.dag_id == TaskInstance.dag_id)
                    & (DagRun.run_id == TaskInstance.run_id)).filter(
                    DagRun.backfill_id.in_(ids)).count()
                return {"runs": len(states), "failed": states.count("failed"),
                        "task_instances": tis}
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfills not done after {timeout_s:.0f} s")
        time.sleep(1)


def measure(workers: int, concurrency: int, env: dict[str, str], cluster, world: Path,
            secret: dict[str, str], start: datetime, hours: int, latency_ms: float) -> dict:
    from launcher.__main__ import wait_workers_ready, worker_command, worker_environment

    executor = Executor("celery", workers=workers, concurrency=concurrency)
    env = {**env, "AIRFLOW__CORE__PARALLELISM": str(workers * concurrency)}
    plant = start_plant(world, secret, latency_ms)
    try:
        for name, cmd in (("api-server", [AIRFLOW, "api-server"]),
                          ("scheduler", [AIRFLOW, "scheduler", "--skip-serve-logs"])):
            processes.start_service(name, cmd, env, INSTANCE.pid_dir, INSTANCE.log_dir, ROOT)
        for name in executor.worker_names():
            processes.start_service(name, worker_command(name, executor),
                                    worker_environment(env, name), INSTANCE.pid_dir,
                                    INSTANCE.log_dir, ROOT)
        wait_workers_ready(INSTANCE, executor, env)
        dags = extraction_dags()
        end_unfinished_runs(dags)
        delete_backfill_runs(dags)
        reset_warehouse(cluster)
        busy0, t0 = cpu_busy_seconds(), time.monotonic()
        ids = run_backfills(dags, start, start + timedelta(hours=hours))
        outcome = wait_backfills(ids, timeout_s=3 * 3600)
        wall = time.monotonic() - t0
        busy = cpu_busy_seconds() - busy0
    finally:
        with signals_held():
            processes.stop_all(str(INSTANCE.var_dir), INSTANCE.pid_dir, timeout_s=10)
            stop_plant(plant)
    return {**outcome, "wall_s": wall, "cpu_cores": busy / wall, "cpu_s": busy}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    # stopped with SIGTERM (kill, a CI timeout): the finally blocks still stop what it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    secret = load_or_create_secrets(INSTANCE)
    env = relayed(platform_environment(INSTANCE, secret, Executor("celery", 2, args.concurrency)))
    # before Airflow is imported: this process reads its metadata (libpq's PG* stay out: the
    # harness is the superuser by its password file, which PGPASSWORD would override)
    os.environ.update({k: v for k, v in env.items() if not k.startswith("PG")})
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    # The schedule makes no runs: only the backfills are measured. (The extraction DAGs must
    # stay unpaused for their backfills to run, and with the schedule on, the scheduler kept
    # adding each DAG's current interval while a measurement ran — runs that took worker slots
    # for the whole measurement, more of them the longer it took: seen 2026-12-03, 52 scheduled
    # task instances within the first 50 minutes of the 1-worker measurement.)
    os.environ["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
    env = service_environment(INSTANCE, {**os.environ, **env})
    cluster = start_provisioned_cluster(INSTANCE, secret)  # stopped by itself if that fails
    redis = RedisServer(INSTANCE.redis_root, INSTANCE.redis_port, secret["REDIS_PASSWORD"])
    try:
        shutil.rmtree(INSTANCE.redis_root, ignore_errors=True)
        redis.start()
        from launcher.__main__ import migrate_airflow, sync_pools

        migrate_airflow(INSTANCE, env)
        sync_pools(env)
        subprocess.run([AIRFLOW, "dags", "reserialize"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        set_paused(extraction_dags())
        world, first_hour = prepare_plant(secret, cluster)
        start = first_hour + timedelta(days=1)  # a full production day, orders already placed
        results = {}
        for workers in (1, 2):
            print(f"  {workers} worker(s) × {args.concurrency} …", flush=True)
            results[workers] = measure(workers, args.concurrency, env, cluster, world, secret,
                                       start, args.hours, args.latency_ms)
    finally:
        with signals_held():
            processes.stop_all(str(INSTANCE.var_dir), INSTANCE.pid_dir, timeout_s=10)
            redis.stop()
            cluster.stop()
    one, two = results[1], results[2]
    ratio = one["wall_s"] / two["wall_s"]
    print(f"\n  plant hours {args.hours}, {one['runs']} DAG runs, {one['task_instances']} task "
          f"instances, {args.latency_ms:.0f} ms per plant request, concurrency "
          f"{args.concurrency} per worker, {os.cpu_count()} cores")
    print(f"  {'workers':>8} {'wall s':>8} {'CPU cores':>10} {'CPU s':>8} {'failed runs':>12}")
    for n, r in results.items():
        print(f"  {n:>8} {r['wall_s']:>8.1f} {r['cpu_cores']:>10.2f} {r['cpu_s']:>8.0f} "
              f"{r['failed']:>12}")
    print(f"  celery_2_over_1_workers = {ratio:.2f} (goal ≥ 1.6)")
    merge_results({
        "celery_2_over_1_workers": round(ratio, 2),
        "celery_1_worker_wall_s": round(one["wall_s"], 1),
        "celery_2_workers_wall_s": round(two["wall_s"], 1),
        "celery_1_worker_cpu_cores": round(one["cpu_cores"], 2),
        "celery_2_workers_cpu_cores": round(two["cpu_cores"], 2),
        "celery_bench_plant_hours": args.hours,
        "celery_bench_task_instances": one["task_instances"],
        "celery_worker_concurrency": args.concurrency,
        "celery_plant_latency_ms": args.latency_ms,
    })
    return 0 if one["failed"] == 0 and two["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
