"""The production-shaped deployment file (validated offline): valid, with no default secret,
every service behind a password, published ports on the loopback by default, and the same roles
as `make run`."""

import re
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml
from factory_platform.sources import all_sources

# Everything the deployment needs from its operator: compose refuses to run without each.
REQUIRED = {
    "POSTGRES_PASSWORD": "pg-super-9f2c",
    "SFDP_LOADER_PASSWORD": "loader-4b1e",
    "SFDP_TRANSFORMER_PASSWORD": "transformer-77aa",
    "SFDP_PUBLISHER_PASSWORD": "publisher-c3d0",
    "SFDP_REPORTER_PASSWORD": "reporter-18fe",
    "SFDP_AIRFLOW_DB_PASSWORD": "airflow-db-5e6f",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-0a0b",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-1c1d",
    "AIRFLOW__API__SECRET_KEY": "api-2e2f",
    "AIRFLOW_ADMIN_PASSWORD": "admin-3a3b",
    "REDIS_PASSWORD": "redis-4c4d",
    "FLOWER_BASIC_AUTH": "ops:flower-5e5f",
    "AIRFLOW_CONN_ERP_INBOUND": "postgres://inbound:erp-9a9b@erp.plant.example:5432/erp",
    # the Modbus edge collector: the PLCs, the plant's broker and its password
    "EDGE_PLC_HOST": "plc.plant.example",
    "EDGE_MQTT_HOST": "mqtt.plant.example",
    "EDGE_MQTT_PASSWORD": "edge-mqtt-7c7d",
    # the plant systems' accounts: one per API, database, OPC UA server or broker of the registry
    **{f"AIRFLOW_CONN_{s.conn_id.upper()}": {
        "http": f"https://{s.system}:{s.system}-key-6a6b@{s.system}.plant.example:443",
        "postgres": f"postgres://reader:{s.system}-8e8f@{s.system}.plant.example:5432/{s.system}",
        "opcua": f"opcua://reader:{s.system}-5f5f@{s.system}.plant.example:4840/plant",
        "mqtt": f"mqtt://reader:{s.system}-4e4e@{s.system}.plant.example:8883",
    }[s.connection_kind] for s in all_sources().values()
       if s.connection_kind in ("http", "postgres", "opcua", "mqtt")},
}
SECRETS = [v.split(":", 1)[-1] if k == "FLOWER_BASIC_AUTH" else v
           for k, v in REQUIRED.items() if not k.startswith("AIRFLOW_CONN_")]


def compose(project_root, tmp_path, variables: dict[str, str], *args: str):
    """`docker-compose -f docker-compose.yml <args>` with exactly `variables` (an empty
    environment otherwise: neither this process's AIRFLOW_CONN_* nor a .env count)."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: `apt-get install docker-compose` "
                    "(make test installs it when it can)")
    env_file = tmp_path / "deploy.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "--env-file", str(env_file), *args],
        cwd=project_root, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"})


@pytest.fixture
def config(project_root, tmp_path) -> dict:
    result = compose(project_root, tmp_path, REQUIRED, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_docker_compose_config_is_valid(project_root, tmp_path):
    result = compose(project_root, tmp_path, REQUIRED, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", [tuple(REQUIRED), ("POSTGRES_PASSWORD",),
                                     ("SFDP_LOADER_PASSWORD",), ("FLOWER_BASIC_AUTH",)])
def test_compose_refuses_to_run_without_its_secrets(project_root, tmp_path, missing):
    """Without them all, and without one (every reference is `:?`, checked below)."""
    result = compose(project_root, tmp_path,
                     {k: v for k, v in REQUIRED.items() if k not in missing}, "config", "-q")
    assert result.returncode != 0
    assert "see .env.example" in result.stderr


def test_compose_file_has_no_default_secret(project_root):
    text = (project_root / "docker-compose.yml").read_text()
    assert "change-me" not in text
    for name in REQUIRED:  # every reference is `${NAME:?…}`: no default, no silent empty value
        references = re.findall(r"\$\{" + re.escape(name) + r"([^}]*)\}", text)
        assert references, name
        assert all(ref.startswith(":?") for ref in references), (name, references)
    example = (project_root / ".env.example").read_text()
    for name in REQUIRED:
        assert re.search(rf"(?m)^{re.escape(name)}=$", example), name  # listed, left empty


def test_compose_scales_celery_workers(config):
    services = config["services"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "airflow-worker", "redis", "postgres"):
        assert name in services, name
    worker = services["airflow-worker"]
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "container_name" not in worker and "ports" not in worker  # --scale needs both absent


def test_every_compose_service_asks_for_a_password(config):
    services = config["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == REQUIRED["POSTGRES_PASSWORD"]
    redis = services["redis"]
    assert "requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDISCLI_AUTH"] == REQUIRED["REDIS_PASSWORD"]
    api = services["airflow-apiserver"]["environment"]
    assert api["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith("/opt/airflow/auth/")
    assert services["flower"]["environment"]["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == \
        REQUIRED["FLOWER_BASIC_AUTH"]
    broker = urlsplit(api["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.password == REQUIRED["REDIS_PASSWORD"]
    # what is published listens on the loopback; nothing but the UI and Flower is published
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"airflow-apiserver", "flower"}
    for ports in published.values():
        assert all(str(p).startswith("127.0.0.1:") or (isinstance(p, dict)
                   and p.get("host_ip") == "127.0.0.1") for p in ports), ports


def test_no_secret_on_a_compose_command_line(config):
    for name, service in config["services"].items():
        for part in (service.get("command") or []), (service.get("entrypoint") or []):
            line = " ".join(part) if isinstance(part, list) else str(part)
            assert not [s for s in SECRETS if s in line], name
        for check in (service.get("healthcheck") or {}).get("test", []):
            assert not [s for s in SECRETS if s in check], name


def test_compose_uses_the_roles_make_run_uses(config):
    """Each warehouse connection has the same role in both; only the init step gets the
    superuser's password."""
    from factory_platform import roles
    from launcher.settings import platform_environment, test_instance

    secret = {key: "x" for key in roles.PASSWORD_ENV.values()}
    secret.update(MES_API_KEY="x", FERNET_KEY="x", API_SECRET_KEY="x", JWT_SECRET="x")
    embedded = platform_environment(test_instance(), secret)
    services = config["services"]
    deployed = services["airflow-worker"]["environment"]

    def user(url: str) -> str:
        return urlsplit(url).username

    for key, value in embedded.items():
        if key.startswith("AIRFLOW_CONN_WAREHOUSE") or key == "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
            assert user(deployed[key]) == user(value), key
    assert deployed["PGUSER"] == embedded["PGUSER"] == roles.TRANSFORMER
    for name, service in services.items():
        env = service.get("environment") or {}
        has_super = REQUIRED["POSTGRES_PASSWORD"] in " ".join(map(str, env.values()))
        assert has_super == (name in ("postgres", "airflow-init")), name
    init = services["airflow-init"]
    assert "factory_platform.provision" in " ".join(init["command"])


def test_make_run_never_overwrites_a_deployments_env_file(tmp_path):
    """`.env.example` tells deployment users to fill `./.env`; `make run` writes its own
    environment to var/run/.env and to `./.env` only while that file is its own (or absent)."""
    from launcher.settings import Instance, env_files, write_env_file

    run = Instance(name="run", pg_port=1, api_port=2, mes_port=3, qms_port=4)
    top = tmp_path / ".env"
    assert env_files(run, tmp_path) == [run.var_dir / ".env", top]  # absent: written
    write_env_file(top, {"PGPORT": "55432"})
    assert env_files(run, tmp_path) == [run.var_dir / ".env", top]  # its own: rewritten
    top.write_text("# compose secrets\nPOSTGRES_PASSWORD=filled-by-the-operator\n")
    assert env_files(run, tmp_path) == [run.var_dir / ".env"]  # a deployment's: left alone
    other = Instance(name="trial", pg_port=1, api_port=2, mes_port=3, qms_port=4)
    assert env_files(other, tmp_path) == [other.var_dir / ".env"]
