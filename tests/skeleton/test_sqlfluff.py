"""The dbt models follow the house SQL style, as SQLFluff checks it (dbt_project/.sqlfluff: the
postgres dialect, the jinja templater with dbt's builtins and the project's macros). `make lint`
runs the same lint; the whole-project run takes ~30 s of CPU, so it is a slow test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_DIR = PROJECT_ROOT / "dbt_project"
SQLFLUFF = str(Path(sys.executable).parent / "sqlfluff")


def lint_string(sql: str, name: str = "models/marts/probe.sql") -> list[str]:
    """The rule codes SQLFluff reports for `sql` as if it were a model of the project."""
    from sqlfluff.core import FluffConfig, Linter

    config = FluffConfig.from_path(str(DBT_DIR))
    result = Linter(config=config).lint_string(sql, fname=str(DBT_DIR / name))
    return sorted({violation.rule_code() for violation in result.get_violations()})


def test_the_house_style_passes_and_its_breaches_are_found():
    """The configuration itself: a model in the house style passes (a project macro and the
    incremental vars rendered), the usual breaches are each reported."""
    good = """with confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
    where {{ changed_in_interval('recorded_at') }}
),

final as (
    select
        confirmations.machine_code,
        sum(confirmations.good_count) as good_count
    from confirmations
    group by confirmations.machine_code
)

select * from final
"""
    assert lint_string(good) == []
    bad = """SELECT Machine_Code, sum(good_count)
from {{ ref('fct_operation_confirmation') }} c
"""
    found = lint_string(bad)
    # keywords and identifiers lowercase, explicit `as` for aliases, a named expression,
    # one select target per line
    assert {"CP01", "CP02", "AL01", "AL03", "LT09"} <= set(found), found


@pytest.mark.slow
def test_every_model_passes_sqlfluff():
    result = subprocess.run(
        [SQLFLUFF, "lint", "models", "--format", "json", "--processes", "2", "--nofail"],
        cwd=DBT_DIR, capture_output=True, text=True, check=False)
    assert result.stdout.strip().startswith("["), result.stdout[-2000:] + result.stderr[-2000:]
    files = json.loads(result.stdout)
    assert len(files) >= 80  # every model file (80 today)
    violations = [f"{f['filepath']}:{v['start_line_no']}:{v['start_line_pos']} {v['code']} "
                  f"{v['description']}" for f in files for v in f["violations"]]
    assert violations == []
