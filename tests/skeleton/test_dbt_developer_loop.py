"""The dbt developer's loop without a warehouse: a model added to dbt_project/ shows up in the
transform DAG at its next parse, without a restart (the manifest is re-parsed when a project file
changed, once, and only then); the slim CI selects exactly what changed against the production
manifest and everything downstream. On a copy of the project (dbt parse needs no database)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a handful of `dbt parse` runs, ~10 s each on 2 cores

PROBE_MODEL = "mart_dev_loop_probe"


@pytest.fixture
def project_copy(tmp_path, monkeypatch) -> Path:
    """dbt_project/ copied (without target/), and dbt_project.py pointed at the copy."""
    from factory_platform import dbt_project

    copy = tmp_path / "dbt_project"
    shutil.copytree(dbt_project.DBT_PROJECT_DIR, copy,
                    ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    monkeypatch.setattr(dbt_project, "DBT_PROJECT_DIR", copy)
    for name, relative in (("MANIFEST_PATH", "target/manifest.json"),
                           ("PARSE_TARGET_DIR", "target/parse"),
                           ("INPUTS_RECORD", "target/manifest.inputs.json"),
                           ("PARSE_LOCK", "target/.manifest.lock")):
        monkeypatch.setattr(dbt_project, name, copy / relative)
    return copy


def transform_task_ids(project: Path, monkeypatch) -> set[str]:
    """The transform DAG as the dag-processor builds it, from the project at `project`."""
    from factory_platform import transform

    monkeypatch.setattr(transform, "DBT_PROJECT_DIR", project)
    monkeypatch.setattr(transform, "MANIFEST_PATH", project / "target" / "manifest.json")
    return {task.task_id for task in transform.build_transform_dag(None).tasks}


def test_a_new_model_shows_up_in_the_transform_dag_without_a_restart(project_copy, monkeypatch):
    from factory_platform import dbt_project

    dbt_project.parse_manifest()
    # nothing changed: a stat per project file, no dbt (each parse of the DAG file pays this)
    started = time.perf_counter()
    for _ in range(20):
        assert dbt_project.ensure_fresh_manifest() is False
    per_check = (time.perf_counter() - started) / 20
    print(f"\nfreshness check, nothing changed: {per_check * 1000:.1f} ms "
          f"({len(dbt_project.project_files())} files)")
    assert per_check < 0.05
    assert not any(PROBE_MODEL in task for task in transform_task_ids(project_copy, monkeypatch))

    # a touch without a change: no parse
    model = project_copy / "models" / "marts" / "production" / "mart_oee_shift.sql"
    os.utime(model)
    assert dbt_project.ensure_fresh_manifest() is False

    # a new model: parsed once, in the manifest and in the DAG
    probe = project_copy / "models" / "marts" / "production" / f"{PROBE_MODEL}.sql"
    probe.write_text("select * from {{ ref('mart_oee_shift') }}\n")
    assert dbt_project.ensure_fresh_manifest() is True
    assert dbt_project.ensure_fresh_manifest() is False
    manifest = dbt_project.MANIFEST_PATH.read_text()
    assert f"model.factory_platform.{PROBE_MODEL}" in manifest
    tasks = transform_task_ids(project_copy, monkeypatch)
    assert any(PROBE_MODEL in task for task in tasks), sorted(tasks)[:10]

    # a broken project: dbt's error, once per change; the last good manifest stays
    probe.write_text("select * from {{ ref('no_such_model') }}\n")
    with pytest.raises(RuntimeError, match="no_such_model"):
        dbt_project.ensure_fresh_manifest()
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="no_such_model"):
        dbt_project.ensure_fresh_manifest()
    assert time.perf_counter() - started < 1  # remembered, not parsed again
    assert f"model.factory_platform.{PROBE_MODEL}" in dbt_project.MANIFEST_PATH.read_text()
    probe.unlink()
    assert dbt_project.ensure_fresh_manifest() is True
    assert PROBE_MODEL not in dbt_project.MANIFEST_PATH.read_text()


def test_slim_ci_selects_what_changed_and_its_downstream_only(project_copy, tmp_path):
    from factory_platform.dbt_project import DEV_TARGET, modified_nodes, slim_ci_command
    from factory_platform.dbt_rules import parse_manifest_into

    state = tmp_path / "production-state"
    production = parse_manifest_into(state, project_dir=project_copy)
    ci_target = tmp_path / "ci"
    # the same project: nothing to build (the dev target's schema names are no change)
    assert modified_nodes(state, project_dir=project_copy, target_path=ci_target) == []

    changed = "mart_production_vs_plan"
    model = next(project_copy.glob(f"models/**/{changed}.sql"))
    model.write_text(model.read_text() + "\n-- a developer's change\n")
    selected = modified_nodes(state, project_dir=project_copy, target_path=ci_target)

    # expected from the production manifest's lineage: the model and all its descendants
    nodes = production["nodes"]
    changed_id = f"model.factory_platform.{changed}"
    expected, frontier = {changed_id}, [changed_id]
    while frontier:
        for child in production["child_map"].get(frontier.pop(), []):
            if child in nodes and child not in expected:
                expected.add(child)
                frontier.append(child)
    expected_models = {nodes[n]["name"] for n in expected if n.startswith("model.")}
    assert expected_models >= {changed, "mart_order_fulfilment"}
    model_names = {nodes[n]["name"] for n in nodes if n.startswith("model.")}
    assert {name for name in selected if name in model_names} == expected_models
    assert any(name.startswith(("unique_", "not_null_")) for name in selected)  # their tests

    command = slim_ci_command(state, selected, project_dir=project_copy)
    assert command[1] == "build"
    assert command[command.index("--target") + 1] == DEV_TARGET
    assert "--defer" in command and command[command.index("--state") + 1] == str(state)
