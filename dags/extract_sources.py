"""
### extract_<system> — one extraction DAG per plant system of the source registry

Every module of `include/factory_platform/sources/` declares a plant system (interface,
connection, schedule, lookback, entities); this file makes its `extract_<system>` DAG — one
task per entity, each raw table an asset — documented by the module's docstring. Adding a
system adds its DAG here without a new file.
"""

from factory_platform.dag_factory import build_extract_dags

# Module globals, so Airflow's DAG discovery finds each DAG by its id.
globals().update(build_extract_dags())
