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

WAREHOUSE_SCHEMAS = (
    "raw_erp", "raw_mes", "raw_wms", "raw_scada", "raw_qms", "raw_plm", "raw_eam", "raw_ems",
    "ops", "staging", "conformed", "marts", "publish", "dq", "reporting", "truth",
)
PLANT_DATABASES = ("erp", "eam")


@dataclass(frozen=True)
class Instance:
    """One embedded installation: `make run`'s (var/run-…) or `make test`'s (var/test-…)."""

    name: str
    pg_port: int
    api_port: int
    mes_port: int
    qms_port: int

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


def run_instance() -> Instance:
    return Instance(
        name="run",
        pg_port=int(os.environ.get("SFDP_PG_PORT", "55432")),
        api_port=int(os.environ.get("SFDP_API_PORT", "8080")),
        mes_port=int(os.environ.get("SFDP_MES_PORT", "18081")),
        qms_port=int(os.environ.get("SFDP_QMS_PORT", "18082")),
    )


def test_instance() -> Instance:
    return Instance(
        name=os.environ.get("SFDP_TEST_INSTANCE", "test"),
        pg_port=int(os.environ.get("SFDP_TEST_PG_PORT", "55433")),
        api_port=int(os.environ.get("SFDP_TEST_API_PORT", "18180")),
        mes_port=int(os.environ.get("SFDP_TEST_MES_PORT", "18191")),
        qms_port=int(os.environ.get("SFDP_TEST_QMS_PORT", "18192")),
    )


def load_or_create_secrets(instance: Instance) -> dict[str, str]:
    """Generated once per instance: the database password and Airflow's signing keys."""
    path = instance.secrets_file
    if path.exists():
        return dict(
            line.split("=", 1) for line in path.read_text().splitlines() if "=" in line
        )
    values = {
        "PGPASSWORD": secrets.token_urlsafe(18),
        "FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "JWT_SECRET": secrets.token_urlsafe(32),
        "API_SECRET_KEY": secrets.token_urlsafe(32),
        "MES_API_KEY": secrets.token_urlsafe(12),
        "ADMIN_PASSWORD": secrets.token_urlsafe(9),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return values


def platform_environment(instance: Instance, secret: dict[str, str]) -> dict[str, str]:
    """Environment for Airflow, dbt, the tests and `psql`: libpq variables + AIRFLOW_CONN_*."""
    pg_user = "postgres"
    pw = secret["PGPASSWORD"]
    host, port = "127.0.0.1", instance.pg_port
    home = instance.airflow_home
    return {
        # libpq: `set -a; . ./.env; psql -c 'select 1'`
        "PGHOST": host,
        "PGPORT": str(port),
        "PGUSER": pg_user,
        "PGPASSWORD": pw,
        "PGDATABASE": "warehouse",
        # Plant systems and the warehouse, as Airflow connections
        "AIRFLOW_CONN_WAREHOUSE": f"postgres://{pg_user}:{pw}@{host}:{port}/warehouse",
        "AIRFLOW_CONN_ERP_DB": f"postgres://{pg_user}:{pw}@{host}:{port}/erp",
        # outbound files (B2MML documents) and the per-run HTML reports
        "SFDP_OUTBOUND_DIR": str(instance.var_dir / "outbound"),
        "SFDP_REPORTS_DIR": str(instance.var_dir / "reports"),
        "AIRFLOW_CONN_EAM_DB": f"postgres://{pg_user}:{pw}@{host}:{port}/eam",
        "AIRFLOW_CONN_MES_API": f"http://mes:{secret['MES_API_KEY']}@127.0.0.1:{instance.mes_port}",
        "AIRFLOW_CONN_QMS_API": f"http://qms:{secret['MES_API_KEY']}@127.0.0.1:{instance.qms_port}",
        # File drops: one folder per system (archive/ and quarantine/ are created inside it)
        **{
            f"AIRFLOW_CONN_{system.upper()}_DROPS": json.dumps(
                {"conn_type": "fs", "extra": {"path": str(instance.plant_dir / "inbox" / system)}}
            )
            for system in ("wms", "scada", "ems", "plm")
        },
        # Airflow
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": secret["FERNET_KEY"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{instance.api_port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"postgresql+psycopg2://{pg_user}:{pw}@{host}:{port}/airflow"
        ),
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


def service_environment(instance: Instance, env: dict[str, str]) -> dict[str, str]:
    """The environment of a service we start: `env` plus the marker `make stop` finds it by.
    (Never set the marker in a shell or test process: whatever that starts — the PostgreSQL
    cluster, say — would count as one of the services.)"""
    return {**env, "SFDP_INSTANCE": str(instance.var_dir)}


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """Write a `.env` that both `set -a; . ./.env` and docker-compose's env_file can read."""
    lines = [
        "# Generated by `make run` on first start; never committed. Secrets for the local cluster.",
        "# Use it with:  set -a; . ./.env; set +a; psql -c 'select 1'",
    ]
    lines += [f"{key}={shlex.quote(value)}" for key, value in env.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
