"""Running a DAG defined inside a test through Airflow (`dag.test()`), and keeping a test's
scheduler to the DAGs under test."""

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


def pause_all_but(dag_ids: tuple[str, ...]) -> dict[str, bool]:
    """Pause every DAG of the metadata DB but `dag_ids`; returns the states before. A
    scheduler a test starts would otherwise schedule every other DAG's latest interval, and the
    asset-triggered DAGs after them, competing with the DAGs under test for slots and CPU."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        before = {m.dag_id: m.is_paused for m in session.query(DagModel)}
        for model in session.query(DagModel):
            model.is_paused = model.dag_id not in dag_ids
    return before


def restore_paused(before: dict[str, bool]) -> None:
    """Undo pause_all_but: each DAG paused or not as it was."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        for model in session.query(DagModel):
            model.is_paused = before.get(model.dag_id, model.is_paused)
