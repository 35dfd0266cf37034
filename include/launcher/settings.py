"""Where the embedded default keeps its state, and the environment every component gets.

The same function builds the environment for `make run` (written once into `.env`) and for
`make test` (a separate cluster on its own port, never written to `.env`).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The simulated plant's databases (a SQL system's database is named after it).
PLANT_DATABASES = ("erp", "eam")


@dataclass(frozen=True)
class Instance:
    """One embedded installation: `make run`'s (var/run-…) or `make test`'s (var/test-…)."""

    name: str
    pg_port: int
    api_port: int
    mes_port: int
    qms_port: int
    bind_host: str = "127.0.0.1"  # where our services listen (SFDP_BIND_HOST)
    redis_port: int = 56380  # the Celery broker's, when EXECUTOR=celery (always 127.0.0.1)
    # the plant's shop floor: its MQTT broker (always 127.0.0.1), OPC UA server and PLCs
    mqtt_port: int = 18883
    opcua_port: int = 48400
    modbus_port: int = 15020

    @property
    def plant_api_ports(self) -> dict[str, int]:
        """The REST systems the simulated plant serves, and where."""
        return {"mes": self.mes_port, "qms": self.qms_port}

    @property
    def var_dir(self) -> Path:
        return PROJECT_ROOT / "var" / self.name

    @property
    def pg_root(self) -> Path:
        return self.var_dir / "pg"

    @property
    def airflow_home(self) -> Path:
        return self.var_dir / "airflow"

    @property
    def plant_dir(self) -> Path:
        return self.var_dir / "plant"

    @property
    def pid_dir(self) -> Path:
        return self.var_dir / "pids"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "logs"

    @property
    def secrets_file(self) -> Path:
        return self.var_dir / "secrets.env"

    @property
    def mosquitto_root(self) -> Path:
        return self.var_dir / "mosquitto"

    @property
    def redis_root(self) -> Path:
        return self.var_dir / "redis"


@dataclass(frozen=True)
class Executor:
    """How Airflow runs tasks: `local` (LocalExecutor, the default of `make run`) or `celery`
    (CeleryExecutor: the private Redis as broker, `workers` `airflow celery worker` processes
    on this machine, each running up to `concurrency` tasks at once)."""

    kind: str = "local"
    workers: int = 2
    concurrency: int = 4

    def __post_init__(self) -> None:
        kind = self.kind.lower().removesuffix("executor")
        if kind not in ("local", "celery"):
            raise ValueError(f"EXECUTOR must be local or celery, not {self.kind!r}")
        object.__setattr__(self, "kind", kind)
        if self.workers < 1 or self.concurrency < 1:
            raise ValueError("WORKERS and CONCURRENCY must be at least 1")

    @property
    def celery(self) -> bool:
        return self.kind == "celery"

    def worker_names(self) -> list[str]:
        """Service names of the workers: worker1, worker2, … (their Celery hostnames are
        `worker<i>@<host>`)."""
        return [f"worker{i}" for i in range(1, self.workers + 1)] if self.celery else []


def run_instance() -> Instance:
    """`make run`'s instance. SFDP_RUN_INSTANCE names another one (var/<name>, its `.env` in
    that folder), to try the launcher beside a running `make run` (with other ports)."""
    return Instance(
        name=os.environ.get("SFDP_RUN_INSTANCE", "run"),
        pg_port=int(os.environ.get("SFDP_PG_PORT", "55432")),
        api_port=int(os.environ.get("SFDP_API_PORT", "8080")),
        mes_port=int(os.environ.get("SFDP_MES_PORT", "18081")),
        qms_port=int(os.environ.get("SFDP_QMS_PORT", "18082")),
        bind_host=os.environ.get("SFDP_BIND_HOST", "127.0.0.1"),
        redis_port=int(os.environ.get("SFDP_REDIS_PORT", "56380")),
        mqtt_port=int(os.environ.get("SFDP_MQTT_PORT", "18883")),
        opcua_port=int(os.environ.get("SFDP_OPCUA_PORT", "48400")),
        modbus_port=int(os.environ.get("SFDP_MODBUS_PORT", "15020")),
    )


def test_instance() -> Instance:
    return Instance(
        name=os.environ.get("SFDP_TEST_INSTANCE", "test"),
        pg_port=int(os.environ.get("SFDP_TEST_PG_PORT", "55433")),
        api_port=int(os.environ.get("SFDP_TEST_API_PORT", "18180")),
        mes_port=int(os.environ.get("SFDP_TEST_MES_PORT", "18191")),
        qms_port=int(os.environ.get("SFDP_TEST_QMS_PORT", "18192")),
        redis_port=int(os.environ.get("SFDP_TEST_REDIS_PORT", "56381")),
        mqtt_port=int(os.environ.get("SFDP_TEST_MQTT_PORT", "18884")),
        opcua_port=int(os.environ.get("SFDP_TEST_OPCUA_PORT", "48401")),
        modbus_port=int(os.environ.get("SFDP_TEST_MODBUS_PORT", "15021")),
    )


# secrets.env keys. PGPASSWORD is the superuser's (the name predates the roles; the cluster's
# superuser keeps it). The roles' passwords use the deployment's variable names.
SUPERUSER_PASSWORD = "PGPASSWORD"
# The platform's account on the plant's MQTT broker: it may only read (launcher.broker_for).
INGEST_MQTT_USER = "sfdp_ingest"


def _secret_generators() -> dict[str, object]:
    from factory_platform import roles

    return {
        SUPERUSER_PASSWORD: lambda: secrets.token_urlsafe(18),
        "FERNET_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "JWT_SECRET": lambda: secrets.token_urlsafe(32),
        "API_SECRET_KEY": lambda: secrets.token_urlsafe(32),
        "MES_API_KEY": lambda: secrets.token_urlsafe(12),
        "ADMIN_PASSWORD": lambda: secrets.token_urlsafe(9),
        "REDIS_PASSWORD": lambda: secrets.token_urlsafe(24),
        # the plant's broker: an account each for the plant, the edge collector, the ingest
        "MQTT_PASSWORD": lambda: secrets.token_urlsafe(18),
        "MQTT_EDGE_PASSWORD": lambda: secrets.token_urlsafe(18),
        "MQTT_INGEST_PASSWORD": lambda: secrets.token_urlsafe(18),
        **{key: roles.new_password for key in roles.PASSWORD_ENV.values()},
    }


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600 from the start: created with that mode and
    renamed into place, so no reader ever sees it with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_secrets(instance: Instance) -> dict[str, str]:
    """Generated once per instance (what is missing is added): the superuser's and every
    role's database password, Airflow's signing keys, the plant's API key, the UI password."""
    path = instance.secrets_file
    values: dict[str, str] = {}
    if path.exists():
        values = dict(
            line.split("=", 1) for line in path.read_text().splitlines() if "=" in line
        )
    missing = {k: make() for k, make in _secret_generators().items() if k not in values}
    if missing or not path.exists():
        values.update(missing)
        write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return values


def role_passwords(secret: dict[str, str]) -> dict[str, str]:
    """Role → password, for provisioning."""
    from factory_platform import roles

    return {role: secret[key] for role, key in roles.PASSWORD_ENV.items()}


def write_passfile(path: Path, port: int, entries: dict[str, str]) -> Path:
    """A libpq password file (0600) for `entries` (role → password) on 127.0.0.1:`port`: DSNs
    name it (`passfile=`) instead of carrying a password, so none is on a command line."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    lines = [f"127.0.0.1:{port}:*:{escape(user)}:{escape(pw)}\n" for user, pw in entries.items()]
    write_private(path, "".join(lines))
    return path


def role_dsn(instance: Instance, role: str, dbname: str, passfile: Path) -> str:
    """A libpq DSN without a password: libpq reads it from `passfile`."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(host="127.0.0.1", port=instance.pg_port, user=role, dbname=dbname,
                         passfile=str(passfile))


def plant_passfile(instance: Instance, secret: dict[str, str]) -> Path:
    """The simulated plant's password file: its own roles only."""
    from factory_platform import roles

    return write_passfile(instance.var_dir / "plant.pgpass", instance.pg_port,
                          {r: secret[roles.PASSWORD_ENV[r]] for r in roles.PLANT_LOGINS})


def admin_passfile(instance: Instance, secret: dict[str, str]) -> Path:
    """The superuser's password file, for the launcher and the test harness only."""
    return write_passfile(instance.var_dir / "admin.pgpass", instance.pg_port,
                          {"postgres": secret[SUPERUSER_PASSWORD]})


def client_host(bind_host: str) -> str:
    """Where our own clients reach a service bound to `bind_host`."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::") else bind_host


def platform_environment(instance: Instance, secret: dict[str, str],
                         executor: Executor | None = None) -> dict[str, str]:
    """Environment for Airflow, dbt, the tests and `psql`: libpq variables + AIRFLOW_CONN_*.

    Every component connects with the role of its job (factory_platform/roles.py), never as the
    superuser, whose password is in none of these:
    `warehouse` (dbt, the transform and the quality gate) → sfdp_transformer;
    `warehouse_load` (extractions) → sfdp_loader; `warehouse_publish` (ERP posting, B2MML) →
    sfdp_publisher; `warehouse_report` (the HTML report) → sfdp_reporter (reporting_reader);
    `erp_db`, `eam_db` (extraction) → sfdp_loader; `erp_inbound` (erp.post_message only) →
    sfdp_publisher; Airflow's metadata → sfdp_airflow. factory_platform.warehouse.warehouse_dsn
    picks the connection of the running task's job. The executor's settings come from
    `executor_environment` (LocalExecutor unless `executor` is celery)."""
    from urllib.parse import quote

    from factory_platform import roles

    host, port = "127.0.0.1", instance.pg_port
    home = instance.airflow_home
    api_host = client_host(instance.bind_host)

    def url(role: str, dbname: str, scheme: str = "postgres") -> str:
        pw = quote(secret[roles.PASSWORD_ENV[role]], safe="")
        return f"{scheme}://{role}:{pw}@{host}:{port}/{dbname}"

    return {
        # libpq, for dbt by hand (`make docs`) and `psql`: the transformer, which reads every
        # layer (`set -a; . ./.env; psql -c 'select 1'`)
        "PGHOST": host,
        "PGPORT": str(port),
        "PGUSER": roles.TRANSFORMER,
        "PGPASSWORD": secret[roles.PASSWORD_ENV[roles.TRANSFORMER]],
        "PGDATABASE": "warehouse",
        # The warehouse per job, and the plant systems, as Airflow connections
        "AIRFLOW_CONN_WAREHOUSE": url(roles.TRANSFORMER, "warehouse"),
        "AIRFLOW_CONN_WAREHOUSE_LOAD": url(roles.LOADER, "warehouse"),
        "AIRFLOW_CONN_WAREHOUSE_PUBLISH": url(roles.PUBLISHER, "warehouse"),
        "AIRFLOW_CONN_WAREHOUSE_REPORT": url(roles.REPORTER, "warehouse"),
        "AIRFLOW_CONN_ERP_INBOUND": url(roles.PUBLISHER, "erp"),
        # outbound files (B2MML documents) and the per-run HTML reports
        "SFDP_OUTBOUND_DIR": str(instance.var_dir / "outbound"),
        "SFDP_REPORTS_DIR": str(instance.var_dir / "reports"),
        # the plant systems' connections, one per system of the source registry
        **plant_connections(instance, secret, lambda dbname: url(roles.LOADER, dbname)),
        # Airflow
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **executor_environment(instance, secret, executor or Executor()),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": secret["FERNET_KEY"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{api_host}:{instance.api_port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url(roles.AIRFLOW, "airflow", "postgresql+psycopg2"),
        # the API server listens on the loopback only (SFDP_BIND_HOST to change it); the log
        # servers are not started (launcher.AIRFLOW_COMPONENTS: --skip-serve-logs): with the
        # LocalExecutor the API server reads task logs from AIRFLOW__LOGGING__BASE_LOG_FOLDER
        "AIRFLOW__API__HOST": instance.bind_host,
        "AIRFLOW__API__PORT": str(instance.api_port),
        "AIRFLOW__API__SECRET_KEY": secret["API_SECRET_KEY"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secret["JWT_SECRET"],
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__COSMOS__PROPAGATE_LOGS": "False",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        "PYTHONPATH": str(PROJECT_ROOT / "include"),
    }


def plant_connections(instance: Instance, secret: dict[str, str],
                      loader_url) -> dict[str, str]:
    """`AIRFLOW_CONN_<conn_id>` of every system in the source registry, pointing at the
    simulated plant, by the kind of the system's connection: a SQL system's database (named
    after the system) as the loader (`loader_url(dbname)`); a REST system's API on its port,
    the plant's API key as the password; a file drop's inbox folder (`archive/` and
    `quarantine/` are made inside it). A system the simulated plant does not serve (no
    database, no API port) gets none: its connection comes from the environment."""
    from factory_platform.sources import all_sources

    connections = {}
    for source in all_sources().values():
        name = f"AIRFLOW_CONN_{source.conn_id.upper()}"
        kind = source.connection_kind
        if kind == "fs":
            inbox = instance.plant_dir / "inbox" / source.system
            connections[name] = json.dumps({"conn_type": "fs", "extra": {"path": str(inbox)}})
        elif kind == "postgres" and source.system in PLANT_DATABASES:
            connections[name] = loader_url(source.system)
        elif kind == "http" and source.system in instance.plant_api_ports:
            port = instance.plant_api_ports[source.system]
            connections[name] = (f"http://{source.system}:{secret['MES_API_KEY']}@127.0.0.1:"
                                 f"{port}")
        elif kind == "opcua":
            # the plant's OPC UA server (one per plant): security None, anonymous
            # (extract/opcua.py)
            connections[name] = json.dumps({
                "conn_type": "opcua", "host": "127.0.0.1", "port": instance.opcua_port,
                "schema": "plant", "extra": {"namespace_uri": "urn:sfdp:plant-sim",
                                             "root": "ENT", "security_policy": "None",
                                             "security_mode": "None"}})
        elif kind == "mqtt":
            # the plant's broker, as the platform's read-only account; the ingest's durable
            # session is this environment's
            connections[name] = json.dumps({
                "conn_type": "mqtt", "host": "127.0.0.1", "port": instance.mqtt_port,
                "login": INGEST_MQTT_USER, "password": secret.get("MQTT_INGEST_PASSWORD", ""),
                "extra": {"client_id": f"sfdp-{instance.name}-ingest"}})
    return connections


# LocalExecutor's task processes at once. Most of a task's time is spent waiting on Postgres, a
# plant system or a dbt subprocess, so more than the 2 cores: with 4, in the latency bench the
# change-triggered extraction tasks held every slot while transform_dbt's next task (priority
# 100, dag_factory.PRIORITY_TO_ERP) waited 1-8 s for one, several times per run.
LOCAL_PARALLELISM = 6


def executor_environment(instance: Instance, secret: dict[str, str],
                         executor: Executor) -> dict[str, str]:
    """What changes with the executor. LocalExecutor: `[core] parallelism` 6 task processes
    (LOCAL_PARALLELISM).
    CeleryExecutor: the private Redis as broker (its password only in this URL, in the
    environment), Celery's results in Airflow's metadata database as the Airflow role
    (sfdp_airflow, which owns it), `concurrency` tasks per worker and a parallelism of every
    worker's slots together; the broker redelivers an unacknowledged task only after 6 hours,
    longer than any task may run (execution_timeout ≤ 2 h), so a slow task is never run twice."""
    if not executor.celery:
        return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(LOCAL_PARALLELISM)}
    from urllib.parse import quote

    from factory_platform import roles

    airflow_pw = quote(secret[roles.PASSWORD_ENV[roles.AIRFLOW]], safe="")
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(executor.workers * executor.concurrency),
        "AIRFLOW__CELERY__BROKER_URL":
            f"redis://:{quote(secret['REDIS_PASSWORD'], safe='')}@127.0.0.1:{instance.redis_port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND":
            f"db+postgresql+psycopg2://{roles.AIRFLOW}:{airflow_pw}@127.0.0.1:{instance.pg_port}"
            "/airflow",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(executor.concurrency),
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
    }


def service_environment(instance: Instance, env: dict[str, str]) -> dict[str, str]:
    """The environment of a service we start: `env` plus the marker `make stop` finds it by.
    (Never set the marker in a shell or test process: whatever that starts — the PostgreSQL
    cluster, say — would count as one of the services.)"""
    return {**env, "SFDP_INSTANCE": str(instance.var_dir)}


GENERATED_ENV_MARK = "# Generated by `make run`"


def env_files(instance: Instance, root: Path = PROJECT_ROOT) -> list[Path]:
    """Where `make run` writes its environment: always `var/<instance>/.env`, and for the
    default instance also `./.env` — unless that file is someone else's (a deployment's,
    filled from `.env.example` for docker-compose: it has no `make run` mark), which is never
    overwritten."""
    files = [instance.var_dir / ".env"]
    top = root / ".env"
    if instance.name == "run" and (not top.exists() or is_generated_env(top)):
        files.append(top)
    return files


def is_generated_env(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.readline().startswith(GENERATED_ENV_MARK)


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """Write a `.env` that both `set -a; . ./.env` and docker-compose's env_file can read."""
    lines = [
        f"{GENERATED_ENV_MARK} on first start; never committed. Secrets for the local cluster.",
        "# Use it with:  set -a; . ./.env; set +a; psql -c 'select 1'",
    ]
    lines += [f"{key}={shlex.quote(value)}" for key, value in env.items()]
    write_private(path, "\n".join(lines) + "\n")
