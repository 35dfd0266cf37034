"""Every dbt model carries what a dbt developer relies on: a description, described columns and
a key test (unique + not_null on one column, or unique_combination_of_columns); and the project
keeps dbt-project-evaluator's modelling rules (factory_platform/dbt_rules.py: sources read only
in staging, every staging model consumed, no rejoined upstream concept), each exception written
with its reason in dbt_project/project_rules.yml."""

from __future__ import annotations

import json
import os

import pytest


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


def test_the_project_keeps_the_evaluator_rules_or_says_why(manifest):
    from factory_platform.dbt_rules import check, load_exceptions

    unexcused, stale = check(manifest, load_exceptions())
    assert [str(v) for v in unexcused] == []
    assert stale == []  # an exception that no longer matches a violation is removed


def _miniature_manifest() -> dict:
    """A project of five models: a staging model reading its source, a mart reading a source
    directly, an unused staging model, and a rejoin (mart_c reads dim_a and fct_b, fct_b's
    only consumer is mart_c and fct_b reads dim_a)."""
    def model(name: str, folder: str) -> tuple[str, dict]:
        return f"model.p.{name}", {"resource_type": "model", "name": name,
                                   "original_file_path": f"models/{folder}/{name}.sql"}

    nodes = dict([model("stg_a", "staging/x"), model("stg_unused", "staging/x"),
                  model("dim_a", "conformed"), model("fct_b", "conformed"),
                  model("mart_c", "marts")])
    nodes["test.p.unique_stg_unused_id"] = {"resource_type": "test", "name": "unique_stg_unused_id"}
    parents = {"model.p.stg_a": ["source.p.x.a"], "model.p.stg_unused": ["source.p.x.a"],
               "model.p.dim_a": ["model.p.stg_a"], "model.p.fct_b": ["model.p.dim_a"],
               "model.p.mart_c": ["model.p.dim_a", "model.p.fct_b", "source.p.x.b"],
               "test.p.unique_stg_unused_id": ["model.p.stg_unused"]}
    children: dict[str, list[str]] = {}
    for child, ps in parents.items():
        for parent in ps:
            children.setdefault(parent, []).append(child)
    sources = {f"source.p.x.{t}": {"source_name": "x", "name": t} for t in ("a", "b")}
    return {"nodes": nodes, "sources": sources, "parent_map": parents, "child_map": children}


def test_each_rule_finds_its_violation_and_an_exception_needs_a_reason(tmp_path):
    from factory_platform.dbt_rules import check, load_exceptions, violations

    manifest = _miniature_manifest()
    assert [str(v) for v in violations(manifest)] == [
        ("rejoined_upstream_concept: mart_c via fct_b (mart_c reads dim_a and fct_b, its only "
         "consumer, which reads it too)"),
        "source_outside_staging: mart_c (x.b)",
        "staging_without_consumer: stg_unused (no model, snapshot or exposure)",
    ]
    rules = tmp_path / "rules.yml"
    rules.write_text("source_outside_staging:\n  mart_c: reads x.b on purpose\n"
                     "staging_without_consumer:\n  stg_a: not a violation\n")
    unexcused, stale = check(manifest, load_exceptions(rules))
    assert [v.key for v in unexcused] == ["mart_c via fct_b", "stg_unused"]
    assert stale == ["staging_without_consumer: stg_a"]
    rules.write_text("source_outside_staging:\n  mart_c: ''\n")
    with pytest.raises(ValueError, match="without a reason"):
        load_exceptions(rules)
