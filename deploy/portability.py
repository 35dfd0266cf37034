"""Which of our SQL is PostgreSQL-specific: an inventory, construct by construct.

    python deploy/portability.py            # print the inventory (markdown, as in deploy/README.md)

The warehouse runs on PostgreSQL 15 (make run, compose) and is meant to run on a managed or a
distributed PostgreSQL (Citus) next, and its dbt project on another adapter one day. This scan
lists every construct that ties our SQL to PostgreSQL — in the dbt project (models, macros,
tests, snapshots; Jinja and SQL comments left out) and in the platform's Python (string literals
only: the SQL it sends) — so each one is a known, documented decision. tests/deploy/
test_portability.py asserts the inventory equals the one in deploy/README.md: a new construct
(or a file that stops using one) changes the README in the same commit.

Scope: include/factory_platform and dbt_project. Out of scope on purpose: include/launcher (the
embedded default's own PostgreSQL cluster) and include/plant_sim (the simulated plant's ERP and
EAM databases, which are PostgreSQL as a real plant's might be anything).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("dbt_project", "include/factory_platform")
SKIPPED_PARTS = {"target", "logs", "dbt_packages", "__pycache__", "b2mml_xsd"}

# construct → (pattern, what it is and where it would need a dispatch/port). Case-insensitive.
CONSTRUCTS: dict[str, tuple[str, str]] = {
    "`::` cast": (r"(?<![:\w])::\s*[a-z_]", "cast shorthand; `cast(x as t)` is portable"),
    "`distinct on`": (r"\bdistinct\s+on\s*\(", "first row per key; elsewhere row_number() = 1 / qualify"),
    "`generate_series`": (r"\bgenerate_series\s*\(", "row generator; elsewhere a date spine (dbt_utils)"),
    "json/jsonb operators": (r"\bjsonb?\b|->>|\bjsonb?_\w+\s*\(|#>>?", "JSON type and operators"),
    "arrays": (r"\barray_agg\s*\(|\barray\s*\[|\bunnest\s*\(|=\s*any\s*\(|\[\]", "array types and functions"),
    "aggregate `filter (where …)`": (r"\bfilter\s*\(\s*where\b", "conditional aggregates; elsewhere sum(case …)"),
    "`bool_or` / `bool_and`": (r"\bbool_(or|and)\s*\(", "boolean aggregates; elsewhere max/min over a case"),
    "`string_agg`": (r"\bstring_agg\s*\(", "listagg elsewhere"),
    "`interval` literals": (r"\binterval\s+'", "date arithmetic; dbt.dateadd elsewhere"),
    "`extract(epoch …)`": (r"\bepoch\b", "seconds between timestamps; dbt.datediff elsewhere"),
    "`at time zone`": (r"\bat\s+time\s+zone\b", "zone conversion; convert_timezone elsewhere"),
    "regular expressions (`~`, `regexp_*`)": (r"\s!?~\*?\s|\bregexp_\w+\s*\(|\bsimilar\s+to\b", "regex operators and functions"),
    "`ilike`": (r"\bilike\b", "case-insensitive like"),
    "advisory locks": (r"\bpg_(try_)?advisory_(xact_)?(un)?lock", "session/transaction advisory locks (publish lock, DDL lock)"),
    "upsert `on conflict`": (r"\bon\s+conflict\b", "insert-or-update; merge elsewhere"),
    "`COPY`": (r"\bcopy\s+[\w.\"]+(\s*\([^)]*\))?\s+(from|to)\b", "bulk load/unload over the wire"),
    "system catalogs (`pg_*`, `to_regclass`, `::regclass`)": (r"\bpg_(catalog|class|namespace|attribute|roles|database|proc|tables|stat_\w+|event_trigger|default_acl)\b|\bto_reg(class|procedure|namespace)\s*\(|\bregclass\b|\bcurrent_setting\s*\(", "PostgreSQL's catalogs and settings"),
    "functions, triggers, `do` blocks": (r"\blanguage\s+plpgsql\b|\bcreate\s+(or\s+replace\s+)?function\b|\bevent\s+trigger\b|\bdo\s+\$\$|\bsecurity\s+definer\b", "server-side code"),
    "roles and grants": (r"\bgrant\s+\w+.*\bto\b|\balter\s+default\s+privileges\b|\bcreate\s+role\b|\brevoke\b", "privilege model (roles.py)"),
    "`bigserial` / `timestamptz` types": (r"\bbigserial\b|\btimestamptz\b", "type names; identity / timestamp with time zone elsewhere"),
}


# A Python string is SQL when it reads like a statement (not a file name, a header, a log line).
SQL_LIKE = re.compile(r"\b(select|insert\s+into|update|delete\s+from|create|alter|grant|revoke|"
                      r"copy|lock|drop|truncate|comment\s+on|do\s+\$\$|on\s+conflict)\b.*\s", re.IGNORECASE | re.DOTALL)


def sql_text(path: Path) -> str:
    """The SQL a file holds: a .sql/.yml without comments, a .py's string literals."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        parts, inside_fstrings = [], set()
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.JoinedStr):  # an f-string reads as one text, `{…}` as a blank
                pieces = [v.value if isinstance(v, ast.Constant) else " " for v in node.values]
                inside_fstrings.update(id(v) for v in node.values)
                parts.append("".join(pieces))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in inside_fstrings:
                parts.append(node.value)
        docstrings = {ast.get_docstring(n, clean=False) for n in ast.walk(ast.parse(text))
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        return "\n".join(p for p in parts if p not in docstrings and SQL_LIKE.search(p))
    text = re.sub(r"\{#.*?#\}", " ", text, flags=re.DOTALL)
    # Jinja's own operators are not SQL (`~` concatenates strings)
    text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", lambda m: m[0].replace("~", " "), text, flags=re.DOTALL)
    if path.suffix == ".sql":
        text = re.sub(r"--[^\n]*", " ", text)
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    else:  # yml: only what dbt runs (data test expressions, hooks); skip descriptions
        text = "\n".join(line for line in text.splitlines()
                         if not re.match(r"\s*(description|#)", line))
    return text


def files() -> list[Path]:
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".sql", ".py", ".yml") and path.is_file() \
                    and not SKIPPED_PARTS & set(path.relative_to(ROOT).parts) \
                    and path.name not in ("dbt_project.yml", "profiles.yml"):
                found.append(path)
    return found


def area(path: str) -> str:
    """Where a file belongs, as the inventory names it: a dbt layer or macro folder
    (`models/staging`, `macros/production`), a platform module or subpackage (`warehouse.py`,
    `extract/`). A new staging model that uses what staging already uses changes nothing."""
    parts = path.split("/")
    if parts[0] == "dbt_project":
        return "/".join(parts[1:3]) if len(parts) > 3 else parts[1]
    inner = parts[2:]
    return inner[0] + "/" if len(inner) > 1 else inner[0]


def inventory() -> dict[str, list[str]]:
    """Construct → the areas (see `area`) whose SQL uses it."""
    texts = {p.relative_to(ROOT).as_posix(): sql_text(p) for p in files()}
    result = {}
    for name, (pattern, _why) in CONSTRUCTS.items():
        rx = re.compile(pattern, re.IGNORECASE)
        result[name] = sorted({area(path) for path, text in texts.items() if rx.search(text)})
    return result


def markdown(inv: dict[str, list[str]]) -> str:
    lines = ["| construct | what it is; the portable way | where (dbt: `models/<layer>`, `macros/<folder>`; platform: `include/factory_platform/…`) |",
             "| --- | --- | --- |"]
    for name, areas in inv.items():
        lines.append(f"| {name} | {CONSTRUCTS[name][1]} | "
                     + (", ".join(f"`{a}`" for a in areas) if areas else "none") + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown(inventory()))
