"""deploy/kubernetes/: what runs beside the official chart on Kubernetes — the MQTT ingest.
Checked against the chart's values (the same image and user, the same environment name, which
names the ingest's durable broker session and which extract_mqtt's heartbeat check derives the
same way), against compose's service (the same command) and against the least-privilege rule
(only the connections its job needs, each by key from the Secret deploy/README.md creates)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deploy.test_compose_contract import connection_env
from deploy.test_helm_values import secret_env_names

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ingest() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "kubernetes" / "mqtt-ingest.yaml").read_text())


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "helm-values.yaml").read_text())


def test_the_ingest_runs_once_with_the_charts_image_and_user(ingest, values):
    assert ingest["kind"] == "Deployment"
    spec = ingest["spec"]
    # one durable session: never two pods, not even for a moment of a rolling update
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    image = values["images"]["airflow"]
    assert container["image"] == f"{image['repository']}:{image['tag']}"
    assert pod["securityContext"]["runAsUser"] == values["uid"]
    assert pod["securityContext"]["runAsGroup"] == values["gid"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["automountServiceAccountToken"] is False
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert container["command"] == compose["services"]["mqtt-ingest"]["entrypoint"]


def test_the_ingest_gets_only_its_connections_each_from_the_secret(ingest, values):
    from factory_platform.sources import get_source

    (container,) = ingest["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in container  # the whole Secret would bring every job's role
    env = {item["name"]: item for item in container["env"]}
    connections = {connection_env(get_source("mqtt").conn_id), connection_env("warehouse_load")}
    assert set(env) == connections | {"SFDP_ENVIRONMENT"}
    for name in connections:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("sfdp-connections", name)
        assert ref["key"] in secret_env_names()
    chart_env = {item["name"]: item.get("value") for item in values["env"]}
    assert env["SFDP_ENVIRONMENT"]["value"] == chart_env["SFDP_ENVIRONMENT"]
