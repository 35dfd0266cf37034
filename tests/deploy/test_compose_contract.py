"""The compose deployment's contract with the code: what the code reads, compose provides, and
the init service's own command succeeds.

1. `docker-compose config` (Debian's v1) resolves docker-compose.yml with a throwaway env file
   that gives every `${VAR:?}` the file requires (found in the file itself).
2. For every Airflow service (every service built from our Dockerfile), its environment — the
   image's `ENV` lines (Dockerfile) under the service's `environment:` — provides every variable
   and every connection the code reads. Both lists come from the code, not from a list here:
   the connections are the source registry's `conn_id`s, the job connections of
   `warehouse.JOB_CONNECTIONS` and every literal connection id the code asks for
   (`warehouse_dsn("…")`, `get_connection("…")`, `conn_id="…"`); the variables are every literal
   `os.environ[…]` / `os.environ.get(…)` / `os.getenv(…)` in the platform code and DAGs and every
   `env_var(…)` of the dbt project (profiles.yml). `DEFAULT_IS_RIGHT` names the few whose
   default is the deployment's value on purpose.
3. Every folder a task reads or writes — each file-drop connection's `extra.path`, each `*_DIR`
   variable the code reads — is, in the worker service, either code built into the image
   (a `COPY` target of the Dockerfile) or on a volume (a named volume or a host folder), so every
   worker replica sees the same files.
4. airflow-init's command (entrypoint + command, the exact strings of the config) runs natively
   with exactly the container's environment (the image's ENV and the service's environment,
   nothing of this process's) against a private PostgreSQL cluster started like the `postgres`
   service (its superuser from POSTGRES_USER / POSTGRES_PASSWORD). It must succeed, twice
   (every `docker-compose up` runs it again). What a container has and this machine has not is
   mapped, in the environment's values only:
     - service host names → 127.0.0.1; the `postgres` service's port 5432 → the private
       cluster's port (in URLs `…@postgres:5432/…`, and PGHOST/PGPORT);
     - container paths → host paths: the Dockerfile's COPY targets → the repository's folders,
       the image's venv → this interpreter's venv, AIRFLOW_HOME and the service's volume
       mounts → fresh temporary folders.
   The command itself is run unchanged (it names no path: the init service takes them from
   its environment).
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("include/factory_platform", "dags", "plugins")  # what runs in the containers

# Variables the code reads whose default is the deployment's value on purpose.
DEFAULT_IS_RIGHT = {
    "WAREHOUSE_ASSET_AUTHORITY": "a logical name for asset URIs, the same on every machine",
    "B2MML_XSD_DIR": "the MESA XSDs vendored inside include/ (in the image)",
    "SFDP_EXTRA_SOURCES": "unset: the registry is the image's own modules (sources/<system>.py)",
    "DBT_DEV_SCHEMA_PREFIX": "the dev target's schema prefix, on a developer's machine only: "
                             "deployments build the production target",
    "USER": "read only by the dev target's default prefix (dev_<OS user>)",
    "SFDP_TRANSFORM_RUN_ID": "set by transform_dbt for its own dbt process (the run whose "
                             "interval the models read): a deployment leaves it unset",
}


# --------------------------------------------------------------------------- the resolved file


def required_variables(compose_text: str) -> list[str]:
    return sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", compose_text)))


def throwaway_value(name: str) -> str:
    """A fresh value for a required variable, of the shape its consumer parses."""
    token = secrets.token_hex(12)
    if "FERNET_KEY" in name:
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()
    if name == "FLOWER_BASIC_AUTH":
        return f"ops:{token}"
    if name.startswith("AIRFLOW_CONN_"):
        system = name.removeprefix("AIRFLOW_CONN_").lower()
        if system.endswith(("_db", "_inbound")):
            return f"postgres://reader:{token}@{system}.plant.example:5432/{system.split('_')[0]}"
        return f"https://{system}:{token}@{system}.plant.example:443"
    return token


@pytest.fixture(scope="module")
def throwaway_env(tmp_path_factory) -> dict[str, str]:
    names = required_variables((ROOT / "docker-compose.yml").read_text())
    assert "POSTGRES_PASSWORD" in names and "SFDP_LOADER_PASSWORD" in names
    return {name: throwaway_value(name) for name in names}


@pytest.fixture(scope="module")
def config(tmp_path_factory, throwaway_env) -> dict:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: `apt-get install docker-compose` "
                    "(make test installs it when it can)")
    env_file = tmp_path_factory.mktemp("compose") / "deploy.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in throwaway_env.items()))
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "--env-file", str(env_file), "config"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"})  # neither our AIRFLOW_CONN_* nor a .env
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def airflow_services(config: dict) -> dict[str, dict]:
    """The services that run our image (built from the Dockerfile)."""
    found = {name: s for name, s in config["services"].items() if "build" in s}
    assert {"airflow-init", "airflow-scheduler", "airflow-worker"} <= set(found)
    return found


def worker_services(config: dict) -> dict[str, dict]:
    """The services that run tasks: Celery workers."""
    found = {name: s for name, s in airflow_services(config).items()
             if "celery worker" in command_line(s)}
    assert found, "no Celery worker service"
    return found


def command_line(service: dict) -> str:
    command = service.get("command") or []
    return " ".join(command) if isinstance(command, list) else str(command)


# --------------------------------------------------------------------------- the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", text)  # continuation lines (comments inside)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def image_environment() -> dict[str, str]:
    """The `ENV` of the Dockerfile, in order (`${NAME}` of an earlier one expanded; others,
    e.g. the base image's PATH, left as written)."""
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword != "ENV":
            continue
        for token in shlex.split(rest):
            name, _, value = token.partition("=")
            env[name] = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m[1], m[0]), value)
    return env


def image_copies() -> dict[str, str]:
    """COPY target in the image → source folder in the repository (single-source COPYs)."""
    copies = {}
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY":
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        if len(parts) == 2:
            copies[parts[1].rstrip("/")] = parts[0].rstrip("/")
    return copies


def container_environment(service: dict) -> dict[str, str]:
    """What a process in the service's container sees: the image's ENV, then the service's."""
    env = image_environment()
    env.update({k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()})
    return env


# --------------------------------------------------------------------------- what the code reads


def code_files() -> list[Path]:
    return sorted(p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))


def _literal(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_environ(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ")


def variables_read_by_code() -> set[str]:
    """Every literal environment variable name the platform code and the dbt project read."""
    names: set[str] = set()
    for path in code_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Subscript) and _is_environ(node.value):
                names.add(_literal(node.slice))
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                environ_get = isinstance(func, ast.Attribute) and func.attr in ("get", "pop") \
                    and _is_environ(func.value)
                getenv = isinstance(func, ast.Attribute) and func.attr == "getenv"
                if environ_get or getenv:
                    names.add(_literal(node.args[0]))
    for path in (ROOT / "dbt_project").rglob("*"):
        if path.suffix in (".yml", ".sql") and not {"target", "logs"} & set(path.parts):
            names.update(re.findall(r"env_var\(\s*['\"](\w+)['\"]", path.read_text()))
    names.discard(None)
    return names


def connections_read_by_code() -> set[str]:
    """Every connection id the code uses: the source registry's, the per-job warehouse
    connections, and each literal id passed to warehouse_dsn / get_connection / conn_id=."""
    import inspect

    from factory_platform import warehouse
    from factory_platform.sources import all_sources

    ids = {source.conn_id for source in all_sources().values()}
    for _dag, _task, mapping in warehouse.JOB_CONNECTIONS:
        ids.update(mapping)
        ids.update(mapping.values())
    ids.add(inspect.signature(warehouse.warehouse_dsn).parameters["conn_id"].default)
    for path in code_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("warehouse_dsn", "get_connection", "job_connection") and node.args:
                ids.add(_literal(node.args[0]))
            ids.update(_literal(k.value) for k in node.keywords if k.arg == "conn_id")
    ids.discard(None)
    return ids


def connection_env(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def parse_connection(value: str) -> dict:
    """The parts of an AIRFLOW_CONN_* value (JSON or URI), as Airflow reads them."""
    from airflow.models.connection import Connection

    conn = Connection(conn_id="probe", **json.loads(value)) if value.lstrip().startswith("{") \
        else Connection(conn_id="probe", uri=value)
    return {"type": conn.conn_type, "host": conn.host, "login": conn.login,
            "extra": conn.extra_dejson}


# --------------------------------------------------------------------------- 2. and 3.


def test_the_code_reads_what_we_think(project_root):
    """The scans find what we know is there (a scan that found nothing would prove nothing)."""
    variables = variables_read_by_code()
    assert {"PGHOST", "PGUSER", "PGPASSWORD", "SFDP_OUTBOUND_DIR", "SFDP_REPORTS_DIR",
            "DBT_PROJECT_DIR"} <= variables, variables
    connections = connections_read_by_code()
    assert {"warehouse", "warehouse_load", "warehouse_publish", "warehouse_report", "erp_db",
            "erp_inbound", "mes_api", "wms_drops", "plm_drops"} <= connections, connections
    assert set(DEFAULT_IS_RIGHT) <= variables  # no stale exemption


def test_every_airflow_service_gets_every_connection_the_code_reads(config):
    needed = {connection_env(c) for c in connections_read_by_code()}
    for name, service in airflow_services(config).items():
        env = container_environment(service)
        missing = sorted(needed - {k for k, v in env.items() if v})
        assert not missing, f"{name} lacks {missing}"
        for key in needed:
            parsed = parse_connection(env[key])
            assert parsed["type"], (name, key)
            assert parsed["host"] or parsed["extra"].get("path"), (name, key)


def test_every_airflow_service_gets_every_variable_the_code_reads(config):
    needed = variables_read_by_code() - set(DEFAULT_IS_RIGHT)
    for name, service in airflow_services(config).items():
        env = container_environment(service)
        missing = sorted(v for v in needed if v not in env)
        assert not missing, f"{name} lacks {missing}"
        # dbt's profile reaches the warehouse service, as the transformer (init: as the
        # superuser, which creates the roles)
        assert env["PGHOST"] == "postgres" and env["PGPORT"] == "5432", name
        assert env["PGPASSWORD"], name


def test_the_mqtt_ingest_gets_only_the_connections_its_job_needs(config):
    """Not an Airflow component: it reads the plant's broker and writes raw_mqtt as the loader,
    and nothing else reaches its container — no other job's role, no metadata database, no dbt
    profile, no Airflow secret key."""
    from factory_platform.sources import get_source

    service = config["services"]["mqtt-ingest"]
    assert "build" not in service  # not airflow-common: its environment is its own
    env = container_environment(service)
    assert set(service["environment"]) == {connection_env(get_source("mqtt").conn_id),
                                           connection_env("warehouse_load"), "SFDP_ENVIRONMENT"}
    # and the image brings no connection, libpq login or secret of its own
    assert not [k for k in image_environment() if k.startswith(("AIRFLOW_CONN_", "PG"))
                or any(word in k for word in ("PASSWORD", "SECRET", "FERNET", "SQL_ALCHEMY"))]
    assert parse_connection(env["AIRFLOW_CONN_WAREHOUSE_LOAD"])["login"] == "sfdp_loader"
    assert env["SFDP_ENVIRONMENT"]  # names its durable broker session


def folders_tasks_use(env: dict[str, str]) -> dict[str, str]:
    """Folder → what names it: every file-drop connection's path, every *_DIR variable."""
    from factory_platform.sources import all_sources

    folders = {}
    for source in all_sources().values():
        path = parse_connection(env[connection_env(source.conn_id)])["extra"].get("path")
        if path:
            folders[path] = source.conn_id
    for variable in sorted(variables_read_by_code()):
        if variable.endswith("_DIR") and env.get(variable):
            folders[env[variable]] = variable
    return folders


def under(path: str, folder: str) -> bool:
    return PurePosixPath(path) == PurePosixPath(folder) or \
        PurePosixPath(folder) in PurePosixPath(path).parents


def test_every_folder_a_task_uses_is_shared_by_all_workers(config):
    named_volumes = set(config.get("volumes") or {})
    image = image_copies()
    for name, service in worker_services(config).items():
        env = container_environment(service)
        mounts = {}
        for volume in service.get("volumes") or []:
            source, target = (volume.split(":")[:2] if isinstance(volume, str)
                              else (volume.get("source"), volume.get("target")))
            mounts[target] = source
        folders = folders_tasks_use(env)
        assert len([f for f in folders.values() if f.endswith("_drops")]) >= 4, folders
        for folder, why in folders.items():
            if any(under(folder, target) for target in image):
                continue  # code built into the image: the same in every replica
            shared = [t for t, source in mounts.items() if under(folder, t)
                      and (source in named_volumes or source.startswith(("/", "./", "../")))]
            assert shared, f"{name}: {why} = {folder} is on no volume (each replica its own)"


def test_the_published_outputs_and_drops_are_the_image_users(config):
    """A named volume starts as a copy of the image's folder: the image creates each mount
    point of the workers' data volumes (else Docker makes it root's, and the airflow user could
    not write)."""
    text = (ROOT / "Dockerfile").read_text()
    for service in worker_services(config).values():
        for volume in service.get("volumes") or []:
            target = volume.split(":")[1]
            if target.startswith("/data"):
                assert target in text, target


# --------------------------------------------------------------------------- 4. the init service


def free_port(first: int = 55481, last: int = 55499) -> int:
    """55481 (this test's port) unless taken — by the session's cluster or another run of this
    test — then the next free one."""
    taken = {int(os.environ.get("SFDP_TEST_PG_PORT", "55433"))}
    for port in range(first, last + 1):
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


def native_environment(env: dict[str, str], service_names: set[str], pg_port: int,
                       paths: dict[str, str]) -> dict[str, str]:
    """`env` with the container's host names and paths mapped to this machine's (see the
    module's docstring). Values only; names unchanged."""
    hosts = "|".join(sorted(map(re.escape, service_names), key=len, reverse=True))
    prefixes = sorted(paths, key=len, reverse=True)

    def host_mapped(value: str) -> str:
        value = re.sub(r"(?<=[@/])postgres:5432(?=[/?]|$)", f"127.0.0.1:{pg_port}", value)
        return re.sub(rf"(?<=[@/])({hosts})(?=[:/]|$)", "127.0.0.1", value)

    def path_mapped(value: str) -> str:
        def one(path: str) -> str:
            for prefix in prefixes:
                if under(path, prefix):
                    return paths[prefix] + path[len(prefix):]
            return path
        # a path alone, a PATH-like list, or a path inside JSON ("path": "/data/…")
        value = re.sub(r'(?<=")(/[^"]*)(?=")', lambda m: one(m[1]), value)
        return ":".join(one(p) if p.startswith("/") else p for p in value.split(":")) \
            if not value.lstrip().startswith("{") and "://" not in value else value

    out = {}
    for key, value in env.items():
        value = host_mapped(value)
        if key == "PGHOST" and value in service_names:
            value = "127.0.0.1"
        if key == "PGPORT" and env.get("PGHOST") == "postgres":
            value = str(pg_port)
        out[key] = path_mapped(value)
    return out


@pytest.fixture
def compose_cluster(config):
    """A private cluster, fresh, started as the `postgres` service starts (its superuser and
    password from that service's environment)."""
    from launcher.pgcluster import Cluster
    from launcher.settings import test_instance

    pg_env = config["services"]["postgres"]["environment"]
    root = test_instance().var_dir / "compose-init" / "pg"
    cluster = Cluster(root, free_port(), pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"])
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)
    cluster.ensure_initialised()
    cluster.start()
    cluster.wait_ready()
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_the_init_service_command_succeeds_natively(config, compose_cluster, tmp_path):
    import psycopg

    service = config["services"]["airflow-init"]
    image_env = image_environment()
    # container paths → this machine's
    paths = {target: str(ROOT / source) for target, source in image_copies().items()}
    paths[image_env["VIRTUAL_ENV"]] = sys.prefix
    paths[image_env["AIRFLOW_HOME"]] = str(tmp_path / "airflow-home")
    for volume in service.get("volumes") or []:
        target = volume.split(":")[1]
        paths[target] = str(tmp_path / "volumes" / target.strip("/").replace("/", "_"))
    for folder in paths.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    env = native_environment(container_environment(service), set(config["services"]),
                             compose_cluster.port, paths)
    env["PATH"] = env["PATH"].replace("${PATH}", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = str(tmp_path / "home")
    assert env["PATH"].startswith(f"{sys.prefix}/bin:"), env["PATH"]
    assert f"127.0.0.1:{compose_cluster.port}" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["PYTHONPATH"] == str(ROOT / "include")
    assert not [k for k in env if k.startswith("SFDP_TEST")]  # nothing of this process's

    entrypoint = service["entrypoint"]
    argv = (entrypoint if isinstance(entrypoint, list) else [entrypoint]) + service["command"]
    for attempt in ("first start", "restart"):  # every `docker-compose up` runs it again
        started = time.monotonic()
        result = subprocess.run(argv, env=env, cwd=paths[image_env["AIRFLOW_HOME"]],
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, (
            f"airflow-init failed on its {attempt} (rc {result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        print(f"airflow-init {attempt}: {time.monotonic() - started:.1f} s")

    # what it made: every role logs in with its own password, on its own database
    for key in ("AIRFLOW_CONN_WAREHOUSE", "AIRFLOW_CONN_WAREHOUSE_LOAD",
                "AIRFLOW_CONN_WAREHOUSE_PUBLISH", "AIRFLOW_CONN_WAREHOUSE_REPORT"):
        url = urlsplit(env[key])
        with psycopg.connect(host=url.hostname, port=url.port, user=url.username,
                             password=url.password, dbname=url.path.lstrip("/")) as conn:
            is_super = conn.execute("select rolsuper from pg_roles where rolname = current_user"
                                    ).fetchone()[0]
            assert not is_super, key
    with psycopg.connect(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace(
            "postgresql+psycopg2://", "postgresql://")) as conn:
        pools = dict(conn.execute("select pool, slots from slot_pool where pool like 'plant_%'"
                                  ).fetchall())
    from factory_platform.pools import declared_pools

    assert pools == {name: slots for name, (slots, _) in declared_pools().items()}
    passwords = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    assert json.loads(passwords.read_text()) == {"admin": env["AIRFLOW_ADMIN_PASSWORD"]}
    with psycopg.connect(compose_cluster.dsn("warehouse")) as conn:
        raw = conn.execute("select count(*) from information_schema.tables "
                           "where table_schema like 'raw\\_%'").fetchone()[0]
    assert raw > 0  # the warehouse is bootstrapped: dbt can build before a system delivered
