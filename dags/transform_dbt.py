"""
### transform_dbt — the dbt middle platform, gated

Runs when the raw tables it reads were updated (Airflow assets from the `extract_*` DAGs).
Every dbt model is a task (Cosmos, `dbt build` of that model: the model, then its tests),
layer by layer: `staging` → `conformed` → `marts`. A failing error-severity test fails its
model's task; downstream models and the **quality gate** do not run, so nothing unchecked is
published. Open the red `…_model_build` task's log to see which test failed and why.

When every model and test passed, `quality_gate` emits the *gated marts* asset that the
publishing DAGs are scheduled on.

dbt project: `dbt_project/`; DAG builder: `include/factory_platform/transform.py`.
"""

from factory_platform.transform import build_transform_dag

dag = build_transform_dag(__doc__)
