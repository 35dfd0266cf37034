"""
### publish_erp — gated MES data to the ERP, exactly once

Scheduled on the *gated marts* asset (`transform_dbt`'s `quality_gate`). Posts production
confirmations, goods movements and quality results from the `publish.pub_erp__*` models to the
ERP's inbound interface (connection `erp_db`, `erp.post_message`), **per scope** and **only
what the gate checked**: a site-day is posted while its rows still hash to what the latest
passed gate run recorded (`dq.checked_publish`; rows changed since wait for the next gate); a
site-day whose error-severity checks fail (`dq.scope_status` = blocked) is held back and
alerted; a flagged one (warnings only) is posted with `dq_flagged`. The posting task holds the
publish-models lock, so no transform rewrites a publish model meanwhile.

Exactly once through `ops.erp_outbox` (see `include/factory_platform/erp_publish.py`):
retries, re-runs and backfills post nothing twice; a changed value posts a reversal and then —
only once the reversal is accepted — a new version; a key that vanished from the publish model
is reversed (unless too many vanish at once: held and alerted); a posted key whose scope is
blocked now is held (its posting stays) and alerted until the scope passes again.

**When the ERP says no.** A transient rejection (`TRANSIENT_*`, e.g. the order is not yet known)
stays pending and is sent again by later runs with backoff (alerted after 6 attempts). A
permanent one holds the key (`ops.erp_hold`): nothing more is posted for it, the alert names
it, the reconciliation counts it. Release it once the cause is fixed:
`python -m factory_platform.erp_publish release <type> <business key> --by <name> --note …`
(`… holds` lists them); the next run plans it again from what the ERP holds.

Then reads the ERP's answers back (`erp.inbound_postings`), rebuilds
`marts.mart_erp_reconciliation` (MES vs published vs ERP per order, pending / retrying / held
confirmations) and writes every accepted confirmation posting not yet in a document as B2MML
OperationsPerformance documents (V0700, validated against the XSD).
"""

from airflow.sdk import dag, task
from factory_platform.dag_factory import PRIORITY_TO_ERP, priority, publishing_dag_args


@dag(
    dag_id="publish_erp",
    tags=["publish", "erp", "b2mml"],
    doc_md=__doc__,
    **publishing_dag_args(),
)
def publish_erp():
    @task(**priority(PRIORITY_TO_ERP))  # on the way from the shop floor to the ERP
    def post_to_erp(**context) -> list[dict]:
        from factory_platform.alerts import send_alert
        from factory_platform.erp_publish import alerts_for, publish_to_erp
        from factory_platform.warehouse import warehouse_dsn

        results = [r.as_dict() for r in publish_to_erp(
            warehouse_dsn(), warehouse_dsn("erp_db"), context["run_id"])]
        for title, text in alerts_for(results):
            send_alert(title, text, run_id=context["run_id"])
        return results

    @task
    def read_back_erp_answers(**context) -> dict:
        from factory_platform.erp_publish import read_back_acknowledgements
        from factory_platform.warehouse import warehouse_dsn

        return read_back_acknowledgements(warehouse_dsn(), context["run_id"])

    @task
    def reconcile_with_erp() -> dict:
        from factory_platform.erp_publish import reconcile
        from factory_platform.warehouse import warehouse_dsn

        return reconcile(warehouse_dsn())

    @task
    def b2mml_documents(**context) -> list[str]:
        import os

        from factory_platform.erp_publish import write_b2mml
        from factory_platform.warehouse import warehouse_dsn

        out_dir = os.environ.get("SFDP_OUTBOUND_DIR", "var/outbound")
        return write_b2mml(warehouse_dsn(), context["run_id"], f"{out_dir}/b2mml")

    posted = post_to_erp()
    posted >> read_back_erp_answers() >> reconcile_with_erp()
    posted >> b2mml_documents()


publish_erp()
