"""`python -m launcher run|stop|status|env` — the embedded default behind `make run` / `make stop`."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from launcher import processes
from launcher.mosquitto import Mosquitto
from launcher.pgcluster import Cluster
from launcher.redisserver import RedisServer
from launcher.settings import (
    INGEST_MQTT_USER,
    PROJECT_ROOT,
    SUPERUSER_PASSWORD,
    Executor,
    Instance,
    admin_passfile,
    client_host,
    env_files,
    load_or_create_secrets,
    plant_passfile,
    platform_environment,
    role_dsn,
    role_passwords,
    run_instance,
    service_environment,
    write_env_file,
    write_private,
)

VENV_BIN = Path(sys.executable).parent
PLANT_BASE_CONFIG = PROJECT_ROOT / "include" / "plant_sim" / "configs" / "default.toml"
PLANT_MQTT_USER = "plant"
EDGE_MQTT_USER = "edge"
UNS_ROOT = "ENT"  # the unified namespace's enterprise level (the plant's topics, sources/mqtt.py)
EDGE_COLLECTOR_CONFIG = PROJECT_ROOT / "include" / "edge_collector" / "gateway.toml"
LIVE_HISTORY_DAYS = 2
MASTER_DATA_LEAD_DAYS = 30  # the history load starts this long before production


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cluster_for(instance: Instance, secret: dict[str, str]) -> Cluster:
    return Cluster(instance.pg_root, instance.pg_port, "postgres", secret[SUPERUSER_PASSWORD],
                   passfile=admin_passfile(instance, secret))


def broker_for(instance: Instance, secret: dict[str, str], root: Path | None = None) -> Mosquitto:
    """The plant's MQTT broker (its machine events on the unified namespace), with an account
    per client and only what each needs: the plant writes its machine events, the edge
    collector its PLC readings, the platform's ingest only reads (least privilege: a leaked
    ingest password publishes nothing on the shop floor)."""
    return Mosquitto(
        root or instance.mosquitto_root, instance.mqtt_port, PLANT_MQTT_USER,
        secret.get("MQTT_PASSWORD", ""),
        more_users={EDGE_MQTT_USER: secret.get("MQTT_EDGE_PASSWORD", ""),
                    INGEST_MQTT_USER: secret.get("MQTT_INGEST_PASSWORD", "")},
        acl=(f"user {PLANT_MQTT_USER}",
             *(f"topic write {UNS_ROOT}/+/+/+/+/{kind}" for kind in ("state", "counter", "alarm")),
             f"user {EDGE_MQTT_USER}", f"topic write {UNS_ROOT}/+/+/+/+/plc",
             f"user {INGEST_MQTT_USER}", f"topic read {UNS_ROOT}/#"))


def redis_for(instance: Instance, secret: dict[str, str]) -> RedisServer:
    return RedisServer(instance.redis_root, instance.redis_port, secret["REDIS_PASSWORD"])


def executor_file(instance: Instance) -> Path:
    return instance.var_dir / "executor.json"


def running_executor(instance: Instance) -> Executor | None:
    """The executor the running Airflow was started with (None when it is not running)."""
    path = executor_file(instance)
    if not path.exists() or not processes.service_alive("scheduler", instance.pid_dir):
        return None
    return Executor(**json.loads(path.read_text()))


def prepare_databases(cluster: Cluster, secret: dict[str, str]) -> None:
    """As the superuser, and only here: the roles (one per job), the warehouse (schemas, ops and
    raw tables, the role matrix), Airflow's and the plant's databases (factory_platform.provision)."""
    from factory_platform.provision import provision

    provision(cluster.dsn("postgres"), role_passwords(secret), plant=True)


def migrate_airflow(instance: Instance, env: dict[str, str]) -> None:
    """`airflow db migrate`, skipped when this Airflow version already migrated this database."""
    import airflow

    stamp = instance.airflow_home / f".migrated-{airflow.__version__}"
    if stamp.exists():
        return
    instance.airflow_home.mkdir(parents=True, exist_ok=True)
    log("migrating the Airflow metadata database …")
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    stamp.touch()


def sync_pools(env: dict[str, str]) -> None:
    """One Airflow pool per plant system, sized from the source registry (the same command the
    deployment's init service runs)."""
    subprocess.run([str(VENV_BIN / "python"), "-m", "factory_platform.pools", "sync"], env=env,
                   check=True, stdout=subprocess.DEVNULL)


def write_admin_password(instance: Instance, secret: dict[str, str]) -> None:
    """The UI login, in SimpleAuthManager's passwords file: readable by its owner only (the
    API server rewrites it in place, which keeps the mode)."""
    write_private(instance.airflow_home / "passwords.json",
                  json.dumps({"admin": secret["ADMIN_PASSWORD"]}))


def build_dbt_manifest(env: dict[str, str]) -> None:
    """`dbt parse` so Cosmos renders the dbt DAG from the manifest (no dbt at DAG-parse time)."""
    from factory_platform import dbt_project

    dbt_project.parse_manifest(env)


def live_plant_config(instance: Instance) -> tuple[Path, datetime]:
    """The default plant, re-dated so that its history ends now and it keeps producing live.

    The world starts LIVE_HISTORY_DAYS before today (the history a newcomer sees at once) and
    runs a few days ahead; the simulator's live clock reveals it as real time passes.
    """
    today = datetime.now(UTC).date()
    start = today - timedelta(days=LIVE_HISTORY_DAYS)
    text = PLANT_BASE_CONFIG.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^start_date = .*$', f'start_date = "{start.isoformat()}"', text)
    text = re.sub(r'(?m)^days = .*$', f"days = {LIVE_HISTORY_DAYS + 3}", text)
    path = instance.var_dir / "plant-live.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path, datetime.combine(start, datetime.min.time(), tzinfo=UTC)


def plant_command(instance: Instance, secret: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The simulated plant's command line and the environment it adds. Nothing secret is on
    the command line: the DSNs name the plant's password file (its own roles: plant_truth,
    plant_erp, plant_eam), the API key comes from PLANT_API_KEY, the broker's password from
    PLANT_MQTT_PASSWORD. Beside MES and QMS it serves the shop floor: OPC UA, a Modbus PLC per
    line, machine events published to the private MQTT broker."""
    from factory_platform import roles

    passfile = plant_passfile(instance, secret)
    config, _ = live_plant_config(instance)
    now = datetime.now(UTC).replace(microsecond=0)
    cmd = [
        str(VENV_BIN / "python"), "-m", "plant_sim", "up",
        "--config", str(config), "--out", str(instance.plant_dir),
        "--mes-port", str(instance.mes_port), "--qms-port", str(instance.qms_port),
        "--host", instance.bind_host, "--clock", "live", "--speed", "1",
        "--start", now.isoformat().replace("+00:00", "Z"),
        "--truth-dsn", role_dsn(instance, roles.PLANT_TRUTH, "warehouse", passfile),
        "--erp-dsn", role_dsn(instance, roles.PLANT_ERP, "erp", passfile),
        "--eam-dsn", role_dsn(instance, roles.PLANT_EAM, "eam", passfile),
        "--opcua-port", str(instance.opcua_port), "--modbus-port", str(instance.modbus_port),
        "--mqtt-host", "127.0.0.1", "--mqtt-port", str(instance.mqtt_port),
        "--mqtt-user", PLANT_MQTT_USER, "--mqtt-client-id", f"plant-sim-{instance.name}",
    ]
    return cmd, {"PLANT_API_KEY": secret["MES_API_KEY"],
                 "PLANT_MQTT_PASSWORD": secret["MQTT_PASSWORD"]}


def outside_environment(env: dict[str, str], own: dict[str, str]) -> dict[str, str]:
    """The environment of a process outside the platform (the plant, the edge collector): `env`
    without the platform's connections, Airflow settings and libpq variables (every password
    of the platform is in one of them), plus the process's `own` key or password."""
    kept = {k: v for k, v in env.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__", "PG"))}
    return {**kept, **own}


def start_plant(instance: Instance, env: dict[str, str], secret: dict[str, str]) -> None:
    cmd, plant_env = plant_command(instance, secret)
    # the plant gets its own key and password file, not the platform's connections
    processes.start_service("plant", cmd, outside_environment(env, plant_env), instance.pid_dir,
                            instance.log_dir, PROJECT_ROOT)


# What the MQTT ingest reads of the environment: its broker account, the warehouse as the
# loader role, the environment's name (its session's client id). Compose gives it the same.
MQTT_INGEST_ENV = ("AIRFLOW_CONN_PLANT_MQTT", "AIRFLOW_CONN_WAREHOUSE_LOAD", "SFDP_ENVIRONMENT")


def mqtt_ingest_environment(env: dict[str, str]) -> dict[str, str]:
    """The ingest's environment: no connection or password but the two its job needs."""
    return outside_environment(env, {k: env[k] for k in MQTT_INGEST_ENV if k in env})


def start_mqtt_ingest(instance: Instance, env: dict[str, str]) -> None:
    """The platform's MQTT ingest (factory_platform.extract.mqtt_ingest): the durable
    subscriber that lands the unified namespace in raw_mqtt. Started before the plant, so its
    session exists before the first machine event; its broker account and the warehouse are
    the environment's connections (plant_mqtt, warehouse_load), never on its command line."""
    processes.start_service("mqtt-ingest", [str(VENV_BIN / "python"), "-m",
                                            "factory_platform.extract.mqtt_ingest"],
                            mqtt_ingest_environment(env), instance.pid_dir, instance.log_dir,
                            PROJECT_ROOT)


def wait_for_mqtt_ingest(instance: Instance, cluster: Cluster, timeout_s: float = 120) -> None:
    """Until the ingest reports itself connected (its heartbeat in raw_mqtt.ingest_session):
    the plant's first events then find its session on the broker."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(cluster.dsn("warehouse")) as conn:
                if conn.execute("select 1 from raw_mqtt.ingest_session where connected "
                                "and beat_at > now() - interval '1 minute'").fetchone():
                    return
        except psycopg.Error:
            pass
        if not processes.service_alive("mqtt-ingest", instance.pid_dir):
            raise SystemExit(f"the MQTT ingest exited — see {instance.log_dir / 'mqtt-ingest.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the MQTT ingest did not connect within {timeout_s:.0f} s — see "
                             f"{instance.log_dir / 'mqtt-ingest.log'}")
        time.sleep(1)


def edge_collector_command(instance: Instance, secret: dict[str, str],
                           config: Path = EDGE_COLLECTOR_CONFIG) -> tuple[list[str], dict[str, str]]:
    """The Modbus edge collector (include/edge_collector): polls the plant's PLCs and publishes
    their readings to the broker, as a gateway on the shop floor does. Its gateway.toml names
    the default plant's PLCs and machines; the ports are this instance's. The broker's password
    by EDGE_MQTT_PASSWORD, never on the command line."""
    cmd = [
        str(VENV_BIN / "python"), "-m", "edge_collector", "run", "--config", str(config),
        "--plc-host", client_host(instance.bind_host), "--plc-port", str(instance.modbus_port),
        "--mqtt-host", "127.0.0.1", "--mqtt-port", str(instance.mqtt_port),
        "--mqtt-user", EDGE_MQTT_USER, "--client-id", f"edge-collector-{instance.name}",
    ]
    return cmd, {"EDGE_MQTT_PASSWORD": secret["MQTT_EDGE_PASSWORD"]}


def start_edge_collector(instance: Instance, env: dict[str, str], secret: dict[str, str]) -> None:
    cmd, edge_env = edge_collector_command(instance, secret)
    # a gateway's environment: none of the platform's connections or passwords
    processes.start_service("edge-collector", cmd, outside_environment(env, edge_env),
                            instance.pid_dir, instance.log_dir, PROJECT_ROOT)


def wait_for_plant(instance: Instance, cluster: Cluster, timeout_s: float = 600) -> None:
    """Until the plant serves (it (re)loads its databases first), then, as the superuser, let
    the loader read the ERP and EAM tables and the publisher call erp.post_message only."""
    from factory_platform.roles import apply_plant_privileges

    url = f"http://{client_host(instance.bind_host)}:{instance.mes_port}/api/v1/health"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if json.load(response).get("status") == "ok":
                    break
        except OSError:
            pass
        if not processes.service_alive("plant", instance.pid_dir):
            raise SystemExit(f"the simulated plant exited — see {instance.log_dir / 'plant.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the simulated plant did not serve within {timeout_s:.0f} s")
        time.sleep(1)
    for system in ("erp", "eam"):
        apply_plant_privileges(cluster.dsn(system), system)


# The scheduler's and the triggerer's log servers would listen on every interface (Airflow
# binds them to all, unconfigurable): not started. With the LocalExecutor the API server reads
# task logs from the shared log folder. (SFDP_SERVE_LOGS=1 starts them anyway.)
_SKIP_LOGS = [] if os.environ.get("SFDP_SERVE_LOGS") == "1" else ["--skip-serve-logs"]
AIRFLOW_COMPONENTS = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler", *_SKIP_LOGS],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", *_SKIP_LOGS],
}


def worker_command(name: str, executor: Executor) -> list[str]:
    """`airflow celery worker` with its own Celery hostname (`worker<i>@<machine>`: the task
    instances record it) and the same concurrency as every other worker. Its log server is not
    started (it would listen on every interface): on one machine the API server reads the task
    logs from the shared log folder."""
    return [str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", f"{name}@%h",
            "--concurrency", str(executor.concurrency), *_SKIP_LOGS]


def worker_environment(env: dict[str, str], name: str) -> dict[str, str]:
    """A worker's environment: its task instances record its Celery hostname (launcher.hostname)."""
    return {**env, "SFDP_WORKER_NAME": name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "launcher.hostname.worker_hostname"}


def components(executor: Executor) -> list[str]:
    return [*AIRFLOW_COMPONENTS, *executor.worker_names()]


# Background work runs at a lower CPU priority: re-parsing the DAG files (~10 % of a core, all
# the time, measured in the latency bench) must not slow the dbt build, the gate and the
# posting that a shop-floor event waits for. `nice` execs the command: the pid stays Airflow's.
NICENESS = {"dag-processor": 10}


def start_airflow(instance: Instance, env: dict[str, str], executor: Executor) -> None:
    for name, args in AIRFLOW_COMPONENTS.items():
        nice = ["nice", "-n", str(NICENESS[name])] if name in NICENESS else []
        processes.start_service(name, [*nice, str(VENV_BIN / "airflow"), *args], env,
                                instance.pid_dir, instance.log_dir, PROJECT_ROOT)
    for name in executor.worker_names():
        processes.start_service(name, worker_command(name, executor), worker_environment(env, name),
                                instance.pid_dir, instance.log_dir, PROJECT_ROOT)


def wait_workers_ready(instance: Instance, executor: Executor, env: dict[str, str],
                       timeout_s: float = 180) -> None:
    """Until every Celery worker answers a ping through the broker (by its hostname)."""
    if not executor.celery:
        return
    probe = ("import json; from airflow.providers.celery.executors.celery_executor import app; "
             "print(json.dumps(sorted((app.control.inspect(timeout=3).ping() or {}))))")
    deadline = time.monotonic() + timeout_s
    names = executor.worker_names()
    while True:
        answered = subprocess.run([str(VENV_BIN / "python"), "-c", probe], env=env,
                                  capture_output=True, text=True, check=False)
        lines = answered.stdout.strip().splitlines()
        ready = json.loads(lines[-1]) if answered.returncode == 0 and lines else []
        if all(any(r.startswith(f"{n}@") for r in ready) for n in names):
            return
        for name in names:
            if not processes.service_alive(name, instance.pid_dir):
                raise SystemExit(f"celery {name} exited — see {instance.log_dir / (name + '.log')}")
        if time.monotonic() > deadline:
            raise SystemExit(f"Celery workers not ready after {timeout_s:.0f} s (answered: "
                             f"{ready}) — see {instance.log_dir}")
        time.sleep(2)


def wait_healthy(instance: Instance, timeout_s: float = 600) -> None:
    url = f"http://{client_host(instance.bind_host)}:{instance.api_port}/api/v2/monitor/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                health = json.load(response)
            states = {k: v.get("status") for k, v in health.items() if isinstance(v, dict)}
            if states and all(s == "healthy" for s in states.values()):
                return
        except OSError:
            pass
        for name in AIRFLOW_COMPONENTS:
            if not processes.service_alive(name, instance.pid_dir):
                raise SystemExit(f"airflow {name} exited — see {instance.log_dir / (name + '.log')}")
        time.sleep(2)
    raise SystemExit(f"Airflow was not healthy after {timeout_s:.0f} s — see {instance.log_dir}")


def api_token(instance: Instance, secret: dict[str, str]) -> str:
    request = urllib.request.Request(
        f"http://{client_host(instance.bind_host)}:{instance.api_port}/auth/token",
        data=json.dumps({"username": "admin", "password": secret["ADMIN_PASSWORD"]}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["access_token"]


def trigger_history_load(instance: Instance, secret: dict[str, str]) -> None:
    """Once per world: a manual run of every extraction DAG over the plant's history so far,
    so the marts and reporting show days of data within minutes, not only the last interval."""
    from factory_platform.sources import all_sources

    marker = instance.var_dir / "history-loaded"
    _, world_start = live_plant_config(instance)
    if marker.exists() and marker.read_text() == world_start.isoformat():
        return
    now = datetime.now(UTC)
    end = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    token = api_token(instance, secret)
    # master data (QMS characteristics, PLM items, ERP orders) is dated before production starts
    reload_start = world_start - timedelta(days=MASTER_DATA_LEAD_DAYS)
    body = {
        "logical_date": None,
        "conf": {"reload_start": reload_start.isoformat(), "reload_end": end.isoformat()},
        "note": "make run: initial load of the simulated plant's history",
    }
    deadline = time.monotonic() + 180
    for source in all_sources().values():
        request = urllib.request.Request(
            f"http://{client_host(instance.bind_host)}:{instance.api_port}"
            f"/api/v2/dags/{source.dag_id}/dagRuns",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        while True:  # a DAG exists once the dag-processor has parsed it
            try:
                with urllib.request.urlopen(request, timeout=30):
                    break
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(3)
    marker.write_text(world_start.isoformat())
    log(f"triggered every extract_* DAG for the plant's history "
        f"{reload_start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC")


def cmd_run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    instance = run_instance()
    executor = Executor(args.executor, args.workers, args.concurrency)
    running = running_executor(instance)
    if running is not None and running != executor:
        raise SystemExit(f"Airflow is running with EXECUTOR={running.kind} WORKERS="
                         f"{running.workers} CONCURRENCY={running.concurrency}; `make stop` "
                         "first to change it")
    secret = load_or_create_secrets(instance)
    env = platform_environment(instance, secret, executor)
    written = env_files(instance)
    for env_file in written:
        write_env_file(env_file, env)
    if instance.name == "run" and PROJECT_ROOT / ".env" not in written:
        log(f"./.env is not make run's (a deployment's, from .env.example?): left as it is; "
            f"make run's environment is in {written[0].relative_to(PROJECT_ROOT)}")
    full_env = service_environment(instance, {**os.environ, **env})

    cluster = cluster_for(instance, secret)
    if cluster.ensure_initialised():
        log(f"created the private PostgreSQL cluster in {cluster.data_dir}")
    cluster.start()
    cluster.wait_ready()
    log(f"PostgreSQL is up on 127.0.0.1:{instance.pg_port}")
    prepare_databases(cluster, secret)
    migrate_airflow(instance, full_env)
    sync_pools(full_env)
    write_admin_password(instance, secret)
    build_dbt_manifest(full_env)
    broker_for(instance, secret).start()
    log(f"MQTT broker (the plant's machine events) is up on 127.0.0.1:{instance.mqtt_port}")
    start_mqtt_ingest(instance, full_env)
    wait_for_mqtt_ingest(instance, cluster)
    log("MQTT ingest connected: the unified namespace lands in raw_mqtt "
        f"(log: {instance.log_dir.relative_to(PROJECT_ROOT)}/mqtt-ingest.log)")
    start_plant(instance, full_env, secret)
    wait_for_plant(instance, cluster)
    log(f"simulated plant serving MES on :{instance.mes_port}, QMS on :{instance.qms_port}, "
        f"OPC UA on :{instance.opcua_port}, Modbus PLCs on :{instance.modbus_port}")
    start_edge_collector(instance, full_env, secret)
    log("Modbus edge collector polling the PLCs, publishing to the broker "
        f"(log: {instance.log_dir.relative_to(PROJECT_ROOT)}/edge-collector.log)")
    if executor.celery:
        redis = redis_for(instance, secret)
        redis.start()
        log(f"Redis (the Celery broker) is up on 127.0.0.1:{instance.redis_port}")
    executor_file(instance).write_text(json.dumps(
        {"kind": executor.kind, "workers": executor.workers, "concurrency": executor.concurrency}))
    start_airflow(instance, full_env, executor)
    log(f"Airflow starting (api-server, scheduler, dag-processor, triggerer"
        f"{', ' + ', '.join(executor.worker_names()) if executor.celery else ''}) …")
    wait_healthy(instance)
    wait_workers_ready(instance, executor, full_env)
    trigger_history_load(instance, secret)
    minutes = (time.monotonic() - started) / 60
    env_hint = ("./.env" if PROJECT_ROOT / ".env" in written
                else str(written[0].relative_to(PROJECT_ROOT)))
    print(
        f"""
  Smart Factory Data Platform is running ({minutes:.1f} min), {describe(executor)}.

    Airflow UI   http://{client_host(instance.bind_host)}:{instance.api_port}
    login        admin / {secret['ADMIN_PASSWORD']}
    warehouse    set -a; . {env_hint}; set +a; psql        (database 'warehouse')
    logs         {instance.log_dir.relative_to(PROJECT_ROOT)}/
    stop         make stop
""",
        flush=True,
    )


def describe(executor: Executor) -> str:
    if not executor.celery:
        return "LocalExecutor"
    return (f"CeleryExecutor with {executor.workers} worker(s) × {executor.concurrency} "
            "concurrent tasks")


def cmd_stop(_: argparse.Namespace) -> None:
    instance = run_instance()
    # Airflow and its Celery workers (with their task processes) first, then the broker and
    # the cluster they talk to
    leftovers = processes.stop_all(str(instance.var_dir), instance.pid_dir)
    if instance.secrets_file.exists():
        secret = load_or_create_secrets(instance)
        redis_for(instance, secret).stop()
        broker_for(instance, secret).stop()
        cluster_for(instance, secret).stop()
    executor_file(instance).unlink(missing_ok=True)
    if leftovers:
        raise SystemExit(f"still running after stop: {leftovers}")
    log("stopped: Airflow (and its Celery workers and Redis, if any), the simulated plant, the "
        "edge collector, the MQTT ingest, the MQTT broker and the private PostgreSQL cluster")


def cmd_status(_: argparse.Namespace) -> None:
    instance = run_instance()
    path = executor_file(instance)
    executor = Executor(**json.loads(path.read_text())) if path.exists() else Executor()
    print(f"{'executor':14} {describe(executor)}")
    for name in ("plant", "edge-collector", "mqtt-ingest", *components(executor)):
        state = "running" if processes.service_alive(name, instance.pid_dir) else "stopped"
        print(f"{name:14} {state}")
    if instance.secrets_file.exists():
        secret = load_or_create_secrets(instance)
        cluster = cluster_for(instance, secret)
        print(f"{'postgres':14} {'running' if cluster.is_running() else 'stopped'}")
        broker = broker_for(instance, secret)
        print(f"{'mqtt broker':14} {'running' if broker.is_running() else 'stopped'}"
              f"  (127.0.0.1:{instance.mqtt_port})")
        redis = redis_for(instance, secret)
        if executor.celery or redis.is_running():
            print(f"{'redis':14} {'running' if redis.is_running() else 'stopped'}"
                  f"  (127.0.0.1:{instance.redis_port})")
    pids = processes.marked_processes(str(instance.var_dir), instance.pid_dir)
    total_kib = sum(processes.pss_kib(pid) for pid in pids)
    print(f"memory (PSS) of the {len(pids)} processes started: {total_kib / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start everything (idempotent)")
    run.add_argument("--executor", default=os.environ.get("EXECUTOR") or "local",
                     help="local (LocalExecutor, the default) or celery (CeleryExecutor)")
    run.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS") or 2),
                     help="Celery workers on this machine (EXECUTOR=celery; default 2)")
    run.add_argument("--concurrency", type=int,
                     default=int(os.environ.get("CONCURRENCY") or 4),
                     help="tasks at once per Celery worker (default 4)")
    run.set_defaults(func=cmd_run)
    sub.add_parser("stop", help="stop everything `run` started").set_defaults(func=cmd_stop)
    sub.add_parser("status", help="what is running").set_defaults(func=cmd_status)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
