"""The dbt project and the platform's SQL stay portable on purpose: every PostgreSQL-only
construct they use is listed, per area, in deploy/README.md (deploy/portability.py scans)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def portability():
    spec = importlib.util.spec_from_file_location("portability", ROOT / "deploy" / "portability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented() -> str:
    text = (ROOT / "deploy" / "README.md").read_text()
    match = re.search(r"<!-- portability:begin -->\n(.*?)<!-- portability:end -->", text, re.DOTALL)
    assert match, "deploy/README.md has no portability inventory"
    return match[1]


def test_the_postgres_only_constructs_are_the_documented_ones():
    scan = portability()
    assert scan.markdown(scan.inventory()) == documented(), (
        "the PostgreSQL-only constructs changed: review them and regenerate the table in "
        "deploy/README.md with `python deploy/portability.py`")


def test_the_scan_finds_what_we_know_is_there():
    """A scan that found nothing would prove nothing: constructs we know about, where they are."""
    inventory = portability().inventory()
    assert "macros/publish" in inventory["advisory locks"]  # the publish-models lock
    assert "models/staging" in inventory["`distinct on`"]  # latest version per key
    assert "extract/" in inventory["`COPY`"]  # the loader
    assert "roles.py" in inventory["functions, triggers, `do` blocks"]  # the event trigger


def test_the_scan_reads_sql_not_comments_or_jinja(tmp_path):
    scan = portability()
    model = tmp_path / "m.sql"
    model.write_text("-- distinct on (x) in a comment\n{# generate_series( #}\n"
                     "select {{ 'a' ~ 'b' }} as c from t\n")
    text = scan.sql_text(model)
    assert not re.search(scan.CONSTRUCTS["`distinct on`"][0], text, re.IGNORECASE)
    assert not re.search(scan.CONSTRUCTS["`generate_series`"][0], text, re.IGNORECASE)
    assert not re.search(scan.CONSTRUCTS["regular expressions (`~`, `regexp_*`)"][0], text, re.IGNORECASE)
    module = tmp_path / "m.py"
    module.write_text('"""select distinct on (x) in a docstring."""\n'
                      'FILE = "manifest.json"\nSQL = "select distinct on (k) * from t"\n')
    text = scan.sql_text(module)
    assert "manifest.json" not in text and "docstring" not in text
    assert re.search(scan.CONSTRUCTS["`distinct on`"][0], text, re.IGNORECASE)
