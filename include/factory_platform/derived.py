"""The files derived from the source registry, so that a system is declared once.

    PYTHONPATH=include python -m factory_platform.derived check   # what disagrees (exit 1)
    PYTHONPATH=include python -m factory_platform.derived write   # write what is derived

* **The dbt source** `dbt_project/models/staging/<system>/_<system>__sources.yml`: `write`
  creates it for a system that has none — source `<system>` on schema `raw_<system>`, a table
  per entity with every declared field as a column of its warehouse type, freshness from the
  schedule. An existing file is never rewritten (its descriptions are written by people);
  `check` reports every field missing from it, every type that differs and every column the
  registry does not declare (the loader's batch columns, `_…`, excepted).
* **The deployment's plant connections**: the block between the `>>> plant connections` and
  `<<< plant connections` lines of `docker-compose.yml` (each system's `AIRFLOW_CONN_*`: a
  required variable for an API or a database, the inbox folder on the shared volume for a
  file drop), of `.env.example` (the variables an operator fills in) and of
  `deploy/helm-values.yaml` (the file drops' connections in the chart's `env`; the accounts
  are keys of the `sfdp-connections` Secret, checked by tests/deploy/test_helm_values.py).

tests/skeleton/test_registry_derived.py runs `check`: a system added to the registry and
not derived fails there, naming this command.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

from factory_platform.sources import Source, all_sources

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = Path("docker-compose.yml")
ENV_EXAMPLE = Path(".env.example")
HELM_VALUES = Path("deploy/helm-values.yaml")
BEGIN, END = ">>> plant connections", "<<< plant connections"
DROPS_ROOT = "/data/plant/inbox"  # the plant-drops volume in every Airflow container
SECRET_KINDS = ("http", "postgres", "opcua", "mqtt")  # connections with an account: the operator's


def sources_yml_path(source: Source, dbt_project: Path) -> Path:
    return dbt_project / "models" / "staging" / source.system / f"_{source.system}__sources.yml"


# --- the dbt source ----------------------------------------------------------------------------


def _schedule_hours(source: Source) -> float:
    from croniter import croniter

    at = datetime(2026, 1, 5, tzinfo=UTC)
    it = croniter(source.schedule_cron, at)
    first = it.get_next(datetime)
    return (it.get_next(datetime) - first).total_seconds() / 3600


def freshness(source: Source) -> tuple[int, int]:
    """Warn and error after (hours): an interval and a margin late; a day for a daily one."""
    period = _schedule_hours(source)
    warn = math.ceil(period) + (2 if period >= 24 else 1)
    return warn, max(6, 2 * warn - 2)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML scalar


def column_description(field) -> str:
    if field.description:
        return field.description
    name = field.name.replace("_", " ").capitalize()
    return f"{name} ({field.type}{', required' if field.required else ''})."


def render_sources_yml(source: Source) -> str:
    """A new system's `_<system>__sources.yml`, from the registry alone."""
    warn, error = freshness(source)
    lines = [
        "version: 2",
        "sources:",
        f"  - name: {source.system}",
        "    description: >",
        f"      {source.title}. Landed by the extract_{source.system} DAG ({source.interface});",
        "      batch metadata _batch_id, _extracted_at, _source, _interval_start, _interval_end,",
        "      _extra. Generated from the source registry (python -m factory_platform.derived).",
        f"    schema: {source.raw_schema}",
        "    config:",
        "      loaded_at_field: _extracted_at",
        "      freshness:",
        f"        warn_after: {{count: {warn}, period: hour}}",
        f"        error_after: {{count: {error}, period: hour}}",
        "    tables:",
    ]
    for entity in source.entities:
        key = ", ".join(entity.natural_key)
        lines += [f"      - name: {entity.name}",
                  f"        description: {_q(f'{entity.description} Natural key: {key}.'.strip())}",
                  "        columns:"]
        lines += [f"          - {{name: {f.name}, data_type: {f.pg_type}, "
                  f"description: {_q(column_description(f))}}}" for f in entity.fields]
    return "\n".join(lines) + "\n"


def sources_yml_disagreements(source: Source, path: Path) -> list[str]:
    """How the dbt source in `path` differs from the registry (empty: it agrees)."""
    import yaml

    if not path.exists():
        return [f"{path}: missing (the dbt source of registry system {source.system!r})"]
    declared = {s.get("name"): s for s in (yaml.safe_load(path.read_text()) or {}).get(
        "sources", [])}
    if source.system not in declared:
        return [f"{path}: no source named {source.system!r}"]
    dbt_source = declared[source.system]
    problems = []
    if dbt_source.get("schema") != source.raw_schema:
        problems.append(f"{path}: schema {dbt_source.get('schema')!r}, the registry lands in "
                        f"{source.raw_schema!r}")
    tables = {t["name"]: t for t in dbt_source.get("tables") or []}
    # the historian fast path's per-file batch table (`<entity>__files`) is the loader's
    loader_tables = {f"{e.name}__files" for e in source.entities if e.option("load") == "copy"}
    for extra in sorted(set(tables) - {e.name for e in source.entities} - loader_tables):
        problems.append(f"{path}: table {extra!r} is not an entity of {source.system!r}")
    for entity in source.entities:
        table = tables.get(entity.name)
        where = f"{path}: {source.system}.{entity.name}"
        if table is None:
            problems.append(f"{where}: missing")
            continue
        columns = {c["name"]: c.get("data_type") for c in table.get("columns") or []}
        for field in entity.fields:
            if field.name not in columns:
                problems.append(f"{where}: column {field.name!r} ({field.pg_type}) missing")
            elif columns[field.name] != field.pg_type:
                problems.append(f"{where}.{field.name}: data_type {columns[field.name]!r}, "
                                f"the registry declares {field.pg_type!r}")
        declared_fields = {f.name for f in entity.fields}
        for name in sorted(columns):
            if name not in declared_fields and not name.startswith("_"):
                problems.append(f"{where}: column {name!r} is not a field in the registry")
    return problems


# --- the deployment's connections -------------------------------------------------------------


def connection_variable(source: Source) -> str:
    return f"AIRFLOW_CONN_{source.conn_id.upper()}"


def drop_connection(source: Source) -> str:
    """A file drop's connection in a container: its inbox folder on the shared plant-drops
    volume, the same in compose and the Helm values."""
    return json.dumps({"conn_type": "fs", "extra": {"path": f"{DROPS_ROOT}/{source.system}"}})


def compose_block(sources: list[Source]) -> list[str]:
    secret = [s for s in sources if s.connection_kind in SECRET_KINDS]
    drops = [s for s in sources if s.connection_kind == "fs"]
    lines = [f"    # {BEGIN} (from the source registry: python -m factory_platform.derived write)",
             "    # the plant's systems, with the accounts the plant gives the platform"]
    lines += [f"    {connection_variable(s)}: ${{{connection_variable(s)}:?see .env.example}}"
              for s in secret]
    lines += ["    # the plant's file drops: one inbox per system on the plant-drops volume (archive/ and",
              "    # quarantine/ are made inside it)"]
    lines += [f"    {connection_variable(s)}: '{drop_connection(s)}'" for s in drops]
    lines.append(f"    # {END}")
    return lines


def env_example_block(sources: list[Source]) -> list[str]:
    lines = [f"# {BEGIN} (from the source registry: python -m factory_platform.derived write)"]
    for source in sources:
        if source.connection_kind in SECRET_KINDS:
            lines.append(f"# {source.system}: {source.title} ({source.connection_kind})")
            lines.append(f"{connection_variable(source)}=")
    lines.append(f"# {END}")
    return lines


def helm_block(sources: list[Source]) -> list[str]:
    lines = [f"  # {BEGIN} (from the source registry: python -m factory_platform.derived write)"]
    for source in sources:
        if source.connection_kind == "fs":
            lines += [f"  - name: {connection_variable(source)}",
                      f"    value: '{drop_connection(source)}'"]
    lines.append(f"  # {END}")
    return lines


def with_block(text: str, block: list[str], name: str) -> str:
    """`text` with the lines from the BEGIN marker to the END marker replaced by `block`."""
    lines = text.splitlines()
    begin = [i for i, line in enumerate(lines) if BEGIN in line]
    end = [i for i, line in enumerate(lines) if END in line]
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        raise ValueError(f"{name}: expected one '{BEGIN}' line and one '{END}' line after it")
    return "\n".join([*lines[:begin[0]], *block, *lines[end[0] + 1:]]) + "\n"


def _blocks(root: Path, sources: list[Source]) -> dict[Path, str]:
    return {
        root / COMPOSE_FILE: with_block((root / COMPOSE_FILE).read_text(),
                                        compose_block(sources), str(COMPOSE_FILE)),
        root / ENV_EXAMPLE: with_block((root / ENV_EXAMPLE).read_text(),
                                       env_example_block(sources), str(ENV_EXAMPLE)),
        root / HELM_VALUES: with_block((root / HELM_VALUES).read_text(),
                                       helm_block(sources), str(HELM_VALUES)),
    }


# --- check and write ----------------------------------------------------------------------------


def check(root: Path = PROJECT_ROOT, dbt_project: Path | None = None) -> list[str]:
    """Every way the derived files disagree with the registry (empty: none)."""
    sources = list(all_sources().values())
    dbt_project = dbt_project or root / "dbt_project"
    problems = []
    for path, wanted in _blocks(root, sources).items():
        if path.read_text() != wanted:
            problems.append(f"{path.name}: its plant connections are not the registry's")
    for source in sources:
        problems += sources_yml_disagreements(source, sources_yml_path(source, dbt_project))
    return problems


def write(root: Path = PROJECT_ROOT, dbt_project: Path | None = None) -> list[Path]:
    """Write the connection blocks and every missing dbt source; return what changed."""
    written = []
    for path, wanted in _blocks(root, list(all_sources().values())).items():
        if path.read_text() != wanted:
            path.write_text(wanted)
            written.append(path)
    return written + write_dbt_sources(dbt_project or root / "dbt_project")


def write_dbt_sources(dbt_project: Path) -> list[Path]:
    """`_<system>__sources.yml` for every system of the registry that has none yet."""
    written = []
    for source in all_sources().values():
        path = sources_yml_path(source, dbt_project)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render_sources_yml(source))
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "write":
        for path in write():
            print(f"wrote {path}")
        command = "check"
    if command == "check":
        problems = check()
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
