"""
### transform_dbt — the dbt middle platform, gated

Runs when the raw tables it reads were updated (Airflow assets from the `extract_*` DAGs).
`data_interval` takes the load batches finished since the last successful run: their windows
are the incremental models' interval (recorded in `ops.transform_run`), and the sources they
changed choose what is built — the models downstream of them (`dbt --select` in its log). A
manual run builds everything (conf `{"changed_only": true}`: only what changed).

`dbt.dbt_producer_watcher` builds that selection in one dbt process (`dbt build`, Cosmos'
watcher mode), layer by layer: `staging` → `conformed` → `marts`, each model's tests right
after it. Every model is still a task, `dbt.<model>_run`: it shows what the build did with the
model — its timing, dbt's message and each test's result in its log. Green: built and tested;
skipped: not built this run (nothing it reads changed); red: the model or a test on it failed —
open its log to see which test and why; what is downstream of it is not built, the producer
and `quality_gate` fail, so nothing unchecked is published.

Then the per-scope gate (site × production day): `dbt_gate_checks` runs the dbt tests tagged
`gate` on the publish models, `gx_gate_checks` the Great Expectations suites; both record every
scope's result in `dq.check_result`. A failing error-severity suite turns its task red (the log
names the expectation) and blocks only its scopes. `quality_gate` then emits the *gated marts*
asset that the publishing DAGs are scheduled on; they read `dq.scope_status` per scope.

dbt project: `dbt_project/`; DAG builder: `include/factory_platform/transform.py`.
"""

from factory_platform.transform import build_transform_dag

dag = build_transform_dag(__doc__)
