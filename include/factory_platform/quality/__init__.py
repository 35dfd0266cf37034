"""Quality gates: checks whose results decide, per scope (site × production day), what is published.

Every check writes one row per scope it evaluated into `dq.check_result` (failing_count 0 when
the scope passed); the view `dq.scope_status` (a dbt model, dbt_project/models/quality) turns the
latest results into a decision per scope: blocked (an error-severity check fails), flagged (only
warnings) or passed.

- `gx_suites`: Great Expectations suites (sensor ranges, required MES fields, row counts against
  their history), run through GX's own 1.x API on batches dbt builds (quality.qa_<suite>).
- `dbt_gate`: the dbt tests tagged `gate`, recorded the same way, plus what they checked.
- `checked`: the gate's contract with publishing — every check step records its completion
  (`dq.gate_step`) and `close_gate` passes a run only when all did (fail closed); the dbt step
  records the publish rows it checked per scope (`dq.checked_publish`), and `publish_erp` posts
  only content that still hashes to that; the publish-models advisory lock keeps transforms,
  the gate and publishing from overlapping.

Nothing here imports great_expectations (~5 s) at module import: only inside the functions a
task calls, so DAG files that import this package parse fast.
"""
