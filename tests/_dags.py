"""Running a DAG defined inside a test through Airflow (`dag.test()`)."""

from __future__ import annotations


def registered(dag):
    """`dag.test()` runs only serialized DAGs of a bundle: write this in-test DAG to the
    metadata DB under the dags-folder bundle (created first on a fresh metadata DB; the DAG's
    file is outside the folder, so the folder's re-parse in `dag.test()` leaves it alone)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag
