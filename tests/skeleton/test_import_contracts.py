"""The architecture as a test: the import-linter contracts in `.importlinter` (the platform and
the plant never import each other; dags and the launcher sit on factory_platform, never the
other way; no import cycles inside factory_platform or plant_sim) hold for the code, and they
would catch a break. Static analysis only: nothing is imported, ~1 s."""

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess:
    """`lint-imports` as `make lint` runs it: packages from include/ (and dags/ from the root)."""
    env = {**os.environ, "PYTHONPATH": f"{root / 'include'}{os.pathsep}{root}"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(config)],
                          check=False, cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_code_keeps_every_contract():
    result = lint_imports(PROJECT_ROOT, PROJECT_ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# A minimal tree with the five top-level packages, each importing only what it may
CLEAN = {
    "dags/extract_x.py": "from factory_platform.dag_factory import build\n",
    "include/factory_platform/__init__.py": "",
    "include/factory_platform/dag_factory.py": "from factory_platform import assets\n",
    "include/factory_platform/assets.py": "",
    "include/launcher/__init__.py": "def start():\n    from factory_platform import assets\n",
    "include/plant_sim/__init__.py": "",
    "include/plant_sim/world.py": "from plant_sim.systems import mes\n",
    "include/plant_sim/systems/__init__.py": "",
    "include/plant_sim/systems/mes.py": "",
    "include/edge_collector/__init__.py": "",
    "include/edge_collector/collector.py": "import json\n",
}

BREAKS = {
    "platform imports the plant": {
        "include/factory_platform/assets.py": "def f():\n    import plant_sim.world\n"},
    "plant imports the platform": {
        "include/plant_sim/systems/mes.py": "from factory_platform import assets\n"},
    "platform imports a DAG": {
        "include/factory_platform/assets.py": "def f():\n    import dags.extract_x\n"},
    "platform imports the launcher": {
        "include/factory_platform/assets.py": "import launcher\n"},
    "launcher imports the plant": {
        "include/launcher/__init__.py": "import plant_sim.world\n"},
    "cycle in the platform (lazy)": {
        "include/factory_platform/assets.py": "def f():\n    from factory_platform import dag_factory\n"},
    "edge collector imports the plant": {
        "include/edge_collector/collector.py": "from plant_sim.world import x\n"},
    "edge collector imports the platform (lazy)": {
        "include/edge_collector/collector.py": "def f():\n    import factory_platform.assets\n"},
    "launcher imports the edge collector": {
        "include/launcher/__init__.py": "import edge_collector.collector\n"},
    "cycle in the plant (lazy)": {
        "include/plant_sim/systems/mes.py": "def f():\n    from plant_sim import world\n"},
}


def contracts_without_exceptions(tmp_path: Path) -> Path:
    """The project's contracts without their `ignore_imports` (their modules are not in a
    miniature tree, and import-linter fails on an exception that matches nothing)."""
    parser = configparser.ConfigParser()
    parser.read(PROJECT_ROOT / ".importlinter")
    for section in parser.sections():
        parser.remove_option(section, "ignore_imports")
    config = tmp_path / ".importlinter"
    with config.open("w") as f:
        parser.write(f)
    return config


def test_the_contracts_hold_on_a_clean_tree(tmp_path):
    write_tree(tmp_path, CLEAN)
    result = lint_imports(tmp_path, contracts_without_exceptions(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 kept, 0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_the_contracts_catch_a_break(tmp_path, case):
    write_tree(tmp_path, {**CLEAN, **BREAKS[case]})
    result = lint_imports(tmp_path, contracts_without_exceptions(tmp_path))
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout, result.stdout + result.stderr
