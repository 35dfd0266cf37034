"""The image (Dockerfile): runtime dependencies only, code and dbt manifest built in, `pip check`
in the build. No Docker engine runs here: the build's steps are checked by what can run here —
the requirement files, the Dockerfile's instructions, and the image's dependency set installed
alone into a throwaway venv (`make image-check`)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV_TOOLS = ("pytest", "pytest-timeout", "playwright", "ruff", "uv", "iniconfig")


def pins(path: Path) -> dict[str, str]:
    return {m[1].lower(): m[2] for m in re.finditer(r"(?m)^([A-Za-z0-9_.\-]+)==(\S+)$",
                                                     path.read_text())}


def pip_check_module():
    spec = importlib.util.spec_from_file_location("pip_check", ROOT / "deploy" / "pip_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runtime_requirements_hold_no_test_or_tool():
    runtime = pins(ROOT / "requirements.txt")
    assert not [t for t in DEV_TOOLS if t in runtime]
    assert {"apache-airflow", "dbt-core", "astronomer-cosmos", "great-expectations"} <= set(runtime)
    dev = pins(ROOT / "requirements" / "dev.txt")
    assert {"pytest", "pytest-timeout", "playwright", "ruff"} <= set(dev)
    # one version per package across both files (uv pip sync installs them together)
    assert {k: v for k, v in dev.items() if k in runtime} == \
        {k: runtime[k] for k in dev if k in runtime}
    # the venv bootstrap installs both (a fresh clone's `make test` has its tools)
    assert "requirements.txt requirements/dev.txt" in (ROOT / "scripts" / "bootstrap-venv.sh").read_text()


def test_dockerfile_installs_runtime_only_and_builds_code_and_manifest_in():
    text = (ROOT / "Dockerfile").read_text()
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "dev.txt" not in instructions and "dev.in" not in instructions
    assert re.search(r"pip install --no-cache-dir --no-deps[\s\\]*-r /opt/sfdp/build/requirements.txt",
                     text)
    assert "pip_check.py" in text  # pip check in the build
    for folder in ("dags", "plugins", "include", "dbt_project"):
        assert re.search(rf"(?m)^COPY --chown=airflow:0 {folder} /opt/airflow/{folder}$", text)
    assert "parse_manifest()" in text.split("USER airflow")[-1]  # parsed after the code is in
    ignored = (ROOT / ".dockerignore").read_text().split()
    for private in (".env", ".venv", "var", ".git", "tests", "dbt_project/target"):
        assert private in ignored, private


def test_pip_check_allows_only_the_excluded_parser():
    pip_check = pip_check_module()
    allowed = pip_check.excluded(ROOT / "requirements" / "excludes.txt")
    assert allowed == {"dbt-core-experimental-parser"}
    ok = ("dbt-core 1.12.6 requires dbt-core-experimental-parser, which is not installed.\n")
    assert pip_check.unexpected(ok, allowed) == []
    assert pip_check.unexpected("No broken requirements found.\n", allowed) == []
    broken = ("dbt-core 1.12.6 requires dbt-core-experimental-parser, which is not installed.\n"
              "apache-airflow-core 3.3.2 requires structlog, which is not installed.\n"
              "celery 5.6.3 has requirement kombu<5.7,>=5.6.0, but you have kombu 5.7.0.\n")
    assert pip_check.unexpected(broken, allowed) == [broken.splitlines()[1], broken.splitlines()[2]]


@pytest.mark.slow
def test_the_image_dependency_set_is_consistent_and_runs_the_platform_alone(tmp_path):
    """What the build does, without Docker: requirements.txt alone, --no-deps, into a fresh
    venv; `pip check` (pip_check.py) passes; the platform's modules import with nothing from
    requirements/dev.txt (≈ 15 s)."""
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "pip_check.py"),
                             "--fresh-venv", str(tmp_path / "venv")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    python = tmp_path / "venv" / "bin" / "python"
    probe = ("import importlib.util, sys\n"
             "assert not [m for m in ('pytest', 'playwright', 'ruff') if importlib.util.find_spec(m)]\n"
             "import airflow.providers.celery.executors.celery_executor, cosmos, dbt.cli.main\n"
             "import great_expectations, matplotlib, lxml, xmlschema, psycopg, psycopg2\n"
             "import factory_platform.dag_factory, factory_platform.transform\n"
             "import factory_platform.erp_publish, factory_platform.report.render\n"
             "import factory_platform.provision, factory_platform.pools, factory_platform.bootstrap\n")
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                            check=False, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "include"),
                                 "AIRFLOW_HOME": str(tmp_path / "airflow"),
                                 "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-4000:]
