"""
### transform_dbt — the dbt middle platform, gated

Runs when the raw tables it reads were updated (Airflow assets from the `extract_*` DAGs).
Every dbt model is a task (Cosmos, `dbt build` of that model: the model, then its tests),
layer by layer: `staging` → `conformed` → `marts`. A failing error-severity test fails its
model's task; downstream models do not run and `quality_gate` fails, so nothing unchecked is
published. Open the red `…_model_build` task's log to see which test failed and why.

Then the per-scope gate (site × production day): `dbt_gate_checks` runs the dbt tests tagged
`gate` on the publish models, `gx_gate_checks` the Great Expectations suites; both record every
scope's result in `dq.check_result`. A failing error-severity suite turns its task red (the log
names the expectation) and blocks only its scopes. `quality_gate` then emits the *gated marts*
asset that the publishing DAGs are scheduled on; they read `dq.scope_status` per scope.

dbt project: `dbt_project/`; DAG builder: `include/factory_platform/transform.py`.
"""

from factory_platform.transform import build_transform_dag

dag = build_transform_dag(__doc__)
