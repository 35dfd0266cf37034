"""The production-shaped deployment file is valid for docker-compose (validated offline)."""

import shutil
import subprocess

import pytest


def test_docker_compose_config_is_valid(project_root):
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: `apt-get install docker-compose` "
                    "(make test installs it when it can)")
    result = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"],
                            cwd=project_root, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_compose_scales_celery_workers(project_root):
    result = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"],
                            cwd=project_root, capture_output=True, text=True, check=True)
    import yaml

    config = yaml.safe_load(result.stdout)
    services = config["services"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "airflow-worker", "redis", "postgres"):
        assert name in services, name
    worker = services["airflow-worker"]
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "container_name" not in worker and "ports" not in worker  # --scale needs both absent
