"""Quality gates: checks whose results decide, per scope (site × production day), what is published.

Every check writes one row per scope it evaluated into `dq.check_result` (failing_count 0 when
the scope passed); the view `dq.scope_status` turns the latest results into a decision per scope:
blocked (an error-severity check fails), flagged (only warnings) or passed.

- `gx_suites`: Great Expectations suites over the warehouse (sensor ranges, required MES fields,
  row counts against their history), run through GX's own 1.x API.
- `dbt_gate`: the dbt tests tagged `gate`, recorded the same way.

Nothing here imports great_expectations (~5 s) at module import: only inside the functions a
task calls, so DAG files that import this package parse fast.
"""
