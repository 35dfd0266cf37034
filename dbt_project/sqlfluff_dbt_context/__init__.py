"""What the project's macros read from dbt, for SQLFluff's jinja templater (.sqlfluff,
`library_path`); the templater's own dbt builtins (ref, source, config, is_incremental, this)
cover the rest.

The models are linted as an incremental run over a day renders them: `is_incremental()` is true
(the builtin) and `var()` answers the interval a transform run passes, so the interval filters
and the recompute CTEs are linted too. `execute` is false, as while dbt parses: macros that
would ask the warehouse (source_or_empty) render the plain relation.
"""

SAMPLE_VARS = {
    "interval_start": "2026-10-20T00:00:00Z",
    "interval_end": "2026-10-21T00:00:00Z",
}

execute = False
project_name = "factory_platform"


class _Target:
    """dbt's `target` for the `lint` pseudo-target (never connected)."""

    name = "lint"
    schema = "staging"
    type = "postgres"


target = _Target()


def var(name, default=None):
    """dbt's var(): the sample interval, else the model's default."""
    return SAMPLE_VARS.get(name, default)


def env_var(name, default=""):
    """dbt's env_var(): the default (lint reads no environment)."""
    return default
