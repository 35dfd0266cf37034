"""deploy/helm-values.yaml (the official Airflow chart): the same image, connections, roles and
shared folders as compose, every secret from a Kubernetes Secret. Neither helm nor the chart is
available offline, so the values are not rendered here (deploy/README.md says so); this checks
them against the code and the secrets rules, and against the chart parameters we rely on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from deploy.test_compose_contract import (
    DEFAULT_IS_RIGHT,
    connection_env,
    connections_read_by_code,
    parse_connection,
    under,
    variables_read_by_code,
)

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEYS = re.compile(r"(password|pass|secret|fernet|token|key)$", re.IGNORECASE)


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "helm-values.yaml").read_text())


def secret_env_names() -> set[str]:
    """The keys of the `sfdp-connections` Secret, as deploy/README.md creates it."""
    text = (ROOT / "deploy" / "README.md").read_text()
    command = re.search(r"create secret generic sfdp-connections(.*?)\n\s*kubectl", text, re.DOTALL)
    assert command, "deploy/README.md does not create the sfdp-connections Secret"
    return set(re.findall(r"--from-literal=(\w+)=", command[1]))


def test_values_use_the_chart_parameters_we_rely_on(values):
    """Keys of the chart's parameter reference (1.22, Airflow 3) — a typo would be ignored."""
    assert values["executor"] in ("CeleryExecutor", "KubernetesExecutor")
    assert values["airflowVersion"] == "3.3.2"
    assert values["images"]["airflow"]["repository"].endswith("smart-factory-platform/airflow")
    assert values["postgresql"]["enabled"] is False
    for key in ("metadataSecretName", "resultBackendSecretName", "brokerUrlSecretName"):
        assert values["data"][key], key
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key], key
    assert values["dags"]["gitSync"]["enabled"] is False  # the DAGs are in the image
    assert "sfdp-connections" in values["extraEnvFrom"]
    migrate = " ".join(values["migrateDatabaseJob"]["args"])
    assert "airflow db migrate" in migrate and "factory_platform.pools sync" in migrate


def test_values_hold_no_secret(values):
    def walk(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if SECRET_KEYS.search(str(key)) and not str(key).endswith("SecretName"):
                    assert value in (None, "", {}) or isinstance(value, (dict, list)), path + key
                walk(value, f"{path}{key}.")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)
    walk(values)
    for item in values["env"]:
        assert not SECRET_KEYS.search(item["name"]) or not item["value"], item["name"]
        assert "://" not in item["value"] or "@" not in item["value"], item["name"]


def test_values_provide_every_connection_and_variable_the_code_reads(values):
    env = {item["name"]: item["value"] for item in values["env"]}
    provided = set(env) | secret_env_names()
    connections = {connection_env(c) for c in connections_read_by_code()}
    assert not sorted(connections - provided)
    # the image's ENV provides the rest (PYTHONPATH, DBT_PROJECT_DIR, …), as under compose
    from deploy.test_compose_contract import image_environment

    variables = variables_read_by_code() - set(DEFAULT_IS_RIGHT) - set(image_environment())
    assert not sorted(variables - provided)
    assert {"PGUSER", "PGPASSWORD"} <= secret_env_names()  # dbt's profile: the transformer


def test_every_folder_a_task_uses_is_on_a_shared_claim(values):
    env = {item["name"]: item["value"] for item in values["env"]}
    claims = {v["name"] for v in values["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["mountPath"]: m["name"] for m in values["volumeMounts"]}
    folders = [parse_connection(v)["extra"]["path"] for k, v in env.items() if k.endswith("_DROPS")]
    folders += [v for k, v in env.items() if k.endswith("_DIR") and k in variables_read_by_code()]
    assert len(folders) >= 6, folders
    for folder in folders:
        assert [p for p, name in mounts.items() if under(folder, p) and name in claims], folder
