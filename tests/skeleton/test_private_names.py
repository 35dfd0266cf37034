"""A platform module uses another module's public names only: a `_name` is its own module's
business (bootstrap once created the historian's tables through the loader's private function).
Static analysis only: nothing is imported, well under a second."""

from __future__ import annotations

import ast
from pathlib import Path

PLATFORM = Path(__file__).resolve().parents[2] / "include" / "factory_platform"


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(path: Path) -> list[str]:
    """`from factory_platform… import _x` and `module._x` (module imported from the platform)."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("factory_platform"):
            for alias in node.names:
                modules.add(alias.asname or alias.name)
                if private(alias.name):
                    found.append(f"{path.name}:{node.lineno} imports {node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            modules.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                           if alias.name.startswith("factory_platform"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_platform_module_reaches_into_another_modules_private_names():
    found = [use for path in sorted(PLATFORM.rglob("*.py")) for use in private_uses(path)]
    assert found == []


def test_the_check_finds_a_private_call(tmp_path):
    module = tmp_path / "bootstrap.py"
    module.write_text("from factory_platform.extract import loader\n"
                      "from factory_platform.warehouse import _lock\n"
                      "loader._ensure_historian_tables(conn, target)\n"
                      "loader.ensure_raw_table(conn, target)\n")
    assert private_uses(module) == [
        "bootstrap.py:2 imports factory_platform.warehouse._lock",
        "bootstrap.py:3 uses loader._ensure_historian_tables",
    ]
