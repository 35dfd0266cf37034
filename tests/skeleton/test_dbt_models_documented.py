"""Every dbt model carries what a dbt developer relies on: a description, described columns and
a key test (unique + not_null on one column, or unique_combination_of_columns)."""

from __future__ import annotations

import json
import os

import pytest

KEY_TESTS = {"unique", "unique_combination_of_columns"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> dict:
    import subprocess

    from factory_platform.dbt_project import DBT_PROJECT_DIR, dbt_executable

    target = tmp_path_factory.mktemp("dbt-target")
    result = subprocess.run(
        [str(dbt_executable()), "parse", "--project-dir", str(DBT_PROJECT_DIR),
         "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(target), "--quiet"],
        env=dict(os.environ, DBT_WRITE_JSON="true"), capture_output=True, text=True,
        check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((target / "manifest.json").read_text())


def models(manifest: dict) -> dict[str, dict]:
    return {node_id: node for node_id, node in manifest["nodes"].items()
            if node["resource_type"] == "model"}


def key_tested(manifest: dict) -> set[str]:
    """Models with a key test: unique_combination_of_columns, or unique and not_null on the
    same column."""
    unique, not_null, combined = set(), set(), set()
    for node in manifest["nodes"].values():
        if node["resource_type"] != "test" or not node.get("test_metadata"):
            continue
        name = node["test_metadata"]["name"]
        model = node.get("attached_node")
        column = node.get("column_name")
        if name == "unique_combination_of_columns":
            combined.add(model)
        elif name == "unique":
            unique.add((model, column))
        elif name == "not_null":
            not_null.add((model, column))
    return combined | {model for model, _ in unique & not_null}


def test_every_model_is_described_with_its_columns(manifest):
    undocumented = [node_id for node_id, node in models(manifest).items()
                    if not node["description"].strip() or not node["columns"]
                    or any(not c["description"].strip() for c in node["columns"].values())]
    assert undocumented == []


def test_every_model_has_a_key_test(manifest):
    without = sorted(set(models(manifest)) - key_tested(manifest))
    assert without == []
    assert len(models(manifest)) >= 70  # 78 today
