"""dbt-project-evaluator's modelling rules, checked on the project's manifest (`make lint`,
tests/skeleton/test_dbt_models_documented.py):

- `source_outside_staging` (the evaluator's fct_direct_join_to_source /
  fct_marts_or_intermediate_dependent_on_source): only staging models read sources;
- `staging_without_consumer`: every staging model feeds a model, snapshot or exposure (its
  tests do not count);
- `rejoined_upstream_concept` (fct_rejoining_of_upstream_concepts): no model C reads both A
  and B when B reads A and C is B's only consumer — B's logic belongs in C, or B stands for a
  concept of its own and says why.

An exception is allowed with a written reason, one per model, in dbt_project/project_rules.yml;
an exception that no longer matches a violation is reported too, so the list stays true.
`python -m factory_platform.dbt_rules` parses the project (no database needed) and exits 1 on
a violation or a stale exception.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from factory_platform.dbt_project import (
    DBT_PROJECT_DIR,
    PRODUCTION_TARGET,
    dbt_environment,
    dbt_executable,
)

EXCEPTIONS_FILE = DBT_PROJECT_DIR / "project_rules.yml"
RULES = ("source_outside_staging", "staging_without_consumer", "rejoined_upstream_concept")
CONSUMER_TYPES = ("model", "snapshot", "exposure")


@dataclass(frozen=True)
class Violation:
    rule: str
    key: str  # what project_rules.yml names: the model (and `via` model for a rejoin)
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.key} ({self.detail})"


def parse_manifest_into(target_path: Path, project_dir: Path | None = None) -> dict:
    """`dbt parse` of the project into `target_path` (production target); the manifest."""
    project_dir = project_dir or DBT_PROJECT_DIR
    result = subprocess.run(
        [str(dbt_executable()), "parse", "--project-dir", str(project_dir), "--profiles-dir",
         str(project_dir), "--target", PRODUCTION_TARGET, "--target-path", str(target_path),
         "--quiet"],
        env=dbt_environment(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{result.stdout}\n{result.stderr}")
    return json.loads((target_path / "manifest.json").read_text())


def _models(manifest: dict) -> dict[str, dict]:
    return {node_id: node for node_id, node in manifest["nodes"].items()
            if node["resource_type"] == "model"}


def _is_staging(node: dict) -> bool:
    return node["original_file_path"].startswith("models/staging/")


def _name(manifest: dict, unique_id: str) -> str:
    if unique_id.startswith("source."):
        source = manifest["sources"][unique_id]
        return f"{source['source_name']}.{source['name']}"
    node = manifest["nodes"].get(unique_id) or manifest.get("exposures", {}).get(unique_id, {})
    return node.get("name", unique_id)


def _parents(manifest: dict, unique_id: str) -> set[str]:
    return {p for p in manifest["parent_map"].get(unique_id, []) if not p.startswith("test.")}


def _consumers(manifest: dict, unique_id: str) -> set[str]:
    return {c for c in manifest["child_map"].get(unique_id, [])
            if c.split(".", 1)[0] in CONSUMER_TYPES}


def sources_outside_staging(manifest: dict) -> list[Violation]:
    found = []
    for node_id, node in _models(manifest).items():
        sources = sorted(_name(manifest, p) for p in _parents(manifest, node_id)
                         if p.startswith("source."))
        if sources and not _is_staging(node):
            found.append(Violation("source_outside_staging", node["name"], ", ".join(sources)))
    return found


def staging_without_consumer(manifest: dict) -> list[Violation]:
    return [Violation("staging_without_consumer", node["name"], "no model, snapshot or exposure")
            for node_id, node in _models(manifest).items()
            if _is_staging(node) and not _consumers(manifest, node_id)]


def rejoined_upstream_concepts(manifest: dict) -> list[Violation]:
    found = []
    models = _models(manifest)
    for child_id, child in models.items():
        parents = _parents(manifest, child_id)
        for middle_id in sorted(parents & set(models)):
            if _consumers(manifest, middle_id) != {child_id}:
                continue
            for upstream_id in sorted(_parents(manifest, middle_id) & parents):
                found.append(Violation(
                    "rejoined_upstream_concept",
                    f"{child['name']} via {models[middle_id]['name']}",
                    f"{child['name']} reads {_name(manifest, upstream_id)} and "
                    f"{models[middle_id]['name']}, its only consumer, which reads it too"))
    return found


def violations(manifest: dict) -> list[Violation]:
    return sorted(sources_outside_staging(manifest) + staging_without_consumer(manifest)
                  + rejoined_upstream_concepts(manifest), key=str)


def load_exceptions(path: Path = EXCEPTIONS_FILE) -> dict[str, dict[str, str]]:
    """{rule: {key: reason}}; every reason must say something."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - set(RULES)
    if unknown:
        raise ValueError(f"{path.name}: unknown rules {sorted(unknown)} (known: {RULES})")
    exceptions = {rule: dict(data.get(rule) or {}) for rule in RULES}
    blank = [f"{rule}: {key}" for rule, entries in exceptions.items()
             for key, reason in entries.items() if not str(reason or "").strip()]
    if blank:
        raise ValueError(f"{path.name}: exceptions without a reason: {blank}")
    return exceptions


def check(manifest: dict, exceptions: dict[str, dict[str, str]]
          ) -> tuple[list[Violation], list[str]]:
    """(violations not excepted, exceptions that match no violation)."""
    found = violations(manifest)
    unexcused = [v for v in found if v.key not in exceptions.get(v.rule, {})]
    matched = {(v.rule, v.key) for v in found}
    stale = [f"{rule}: {key}" for rule, entries in exceptions.items() for key in entries
             if (rule, key) not in matched]
    return unexcused, stale


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="dbt-rules-") as target:
        manifest = parse_manifest_into(Path(target))
    unexcused, stale = check(manifest, load_exceptions())
    for violation in unexcused:
        print(f"violation {violation}")
    for entry in stale:
        print(f"stale exception in {EXCEPTIONS_FILE.name} (no such violation): {entry}")
    total = sum(len(v) for v in load_exceptions().values())
    print(f"dbt project rules: {len(_models(manifest))} models, {len(unexcused)} violations, "
          f"{total} written exceptions, {len(stale)} stale")
    return 1 if unexcused or stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
