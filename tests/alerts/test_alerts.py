"""Alerts go to the webhook of the Airflow connection `alert_webhook` (its secret the
connection's password, masked), through the Airflow notifier every task's failure callback and
the extraction deadline (a DeadlineAlert) use: a failing task names DAG, task, run and error; a
run late for its deadline names the run (not for backfill runs); the webhook's secret is in no log
line; a plain Airflow Variable configures nothing."""

from __future__ import annotations

import asyncio
import logging
import secrets

import pytest
from _dags import registered
from _webhook import Receiver, webhook_connection


@pytest.fixture
def secret() -> str:
    return "whk" + secrets.token_hex(16)


@pytest.fixture
def webhook(monkeypatch, secret):
    """The receiver, configured as the connection `alert_webhook` (the secret in the path)."""
    receiver = Receiver()
    monkeypatch.delenv("SFDP_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_WEBHOOK", webhook_connection(receiver.port, secret))
    yield receiver
    receiver.server.shutdown()


def test_a_failing_task_posts_an_alert_naming_task_and_error(webhook, secret, caplog):
    from airflow.sdk import dag, task
    from factory_platform.alerts import WebhookNotifier
    from factory_platform.dag_factory import START_DATE, default_args

    args = default_args()
    assert isinstance(args["on_failure_callback"], WebhookNotifier)

    @dag(dag_id="alert_probe", schedule=None, start_date=START_DATE, catchup=False,
         default_args={**args, "retries": 0})
    def probe():
        @task
        def check_sensor_ranges():
            raise ValueError("expect_column_values_to_be_between(value) failed in 3 scopes")

        check_sensor_ranges()

    with caplog.at_level(logging.INFO):
        run = registered(probe()).test()
    assert str(run.state) == "failed"
    assert [post["path"] for post in webhook.posts] == [f"/hooks/{secret}"]
    alert = webhook.alerts[0]
    assert alert["dag_id"] == "alert_probe"
    assert alert["task_id"] == "check_sensor_ranges"
    assert "expect_column_values_to_be_between(value) failed in 3 scopes" in alert["text"]
    assert alert["run_id"] == run.run_id
    assert secret not in caplog.text


def test_the_secret_may_go_in_a_bearer_header_instead(monkeypatch, secret):
    from factory_platform.alerts import send_alert

    receiver = Receiver()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_ALERT_WEBHOOK",
                           webhook_connection(receiver.port, secret, path="/alerts"))
        assert send_alert("Scope blocked", "ERF 2026-10-20: gate_confirmation_order_known")
    finally:
        receiver.server.shutdown()
    assert [(p["path"], p["auth"]) for p in receiver.posts] == [("/alerts", f"Bearer {secret}")]
    assert receiver.alerts[0]["title"] == "Scope blocked"


def test_a_failed_post_logs_the_host_never_the_secret(monkeypatch, secret, caplog):
    """The webhook is down: the warning names scheme, host and port; the secret (the URL's
    path here) appears in no log line, and the alert does not raise."""
    import socket

    from factory_platform.alerts import send_alert

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_WEBHOOK", webhook_connection(port, secret))
    with caplog.at_level(logging.INFO):
        assert send_alert("Source not seen: mes", f"no batch for 41 min (hook {secret})") is False
    assert f"alert webhook http://127.0.0.1:{port} failed" in caplog.text
    assert "Source not seen: mes" in caplog.text
    assert secret not in caplog.text  # not even where the text quoted it: masked as ***
    assert "***" in caplog.text


def test_a_plain_variable_configures_no_webhook(monkeypatch, caplog):
    """`alert_webhook_url` as an Airflow Variable (shown in plain text in the UI) is not read."""
    from factory_platform.alerts import send_alert

    receiver = Receiver()
    try:
        monkeypatch.delenv("SFDP_ALERT_WEBHOOK_URL", raising=False)
        monkeypatch.delenv("AIRFLOW_CONN_ALERT_WEBHOOK", raising=False)
        monkeypatch.setenv("AIRFLOW_VAR_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{receiver.port}/")
        with caplog.at_level("ERROR", logger="factory_platform.alerts"):
            assert send_alert("Scope blocked", "ERF 2026-10-20: gate_confirmation_order_known") \
                is False
    finally:
        receiver.server.shutdown()
    assert receiver.posts == []
    assert "Scope blocked" in caplog.text  # logged all the same


def test_without_a_webhook_an_alert_is_only_logged(monkeypatch, caplog):
    from factory_platform.alerts import send_alert

    monkeypatch.delenv("SFDP_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_ALERT_WEBHOOK", raising=False)
    with caplog.at_level("ERROR", logger="factory_platform.alerts"):
        assert send_alert("Scope blocked", "ERF 2026-10-20: gate_confirmation_order_known") is False
    assert "Scope blocked" in caplog.text


# --------------------------------------------------------------------------- deadlines


def test_the_extraction_deadline_alerts_through_the_notifier():
    """source_watch.extraction_deadline: queued + the schedule's interval + 10 min, the
    notifier as the triggerer's callback (every extraction DAG carries it: test_dagbag)."""
    from airflow.sdk import AsyncCallback, DeadlineReference
    from factory_platform.source_watch import extraction_deadline, run_deadline
    from factory_platform.sources import all_sources

    for system, source in all_sources().items():
        alert = extraction_deadline(source)
        assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT, system
        assert alert.interval == run_deadline(source), system
        assert isinstance(alert.callback, AsyncCallback), system
        assert alert.callback.path == "factory_platform.alerts.WebhookNotifier", system
    deadlines = {s: run_deadline(src).total_seconds() / 60 for s, src in all_sources().items()}
    assert deadlines["mes"] == deadlines["qms"] == 25  # 15-minute schedule + 10 min grace
    assert deadlines["erp"] == deadlines["scada"] == 70
    assert deadlines["plm"] == 24 * 60 + 10


def _run_context(run_type: str) -> dict:
    """The context the scheduler hands a missed deadline's callback (Deadline.handle_miss)."""
    return {"dag_run": {"dag_id": "extract_mes", "dag_run_id": f"{run_type}__2026-12-03T04:00",
                        "run_type": run_type, "state": "running",
                        "queued_at": "2026-12-03T04:15:02Z",
                        "data_interval_start": "2026-12-03T04:00:00Z",
                        "data_interval_end": "2026-12-03T04:15:00Z"},
            "deadline": {"id": "0193", "deadline_time": "2026-12-03T04:40:02Z"}}


def _trigger(context: dict) -> list[dict]:
    """What the triggerer does with a missed deadline's AsyncCallback: CallbackTrigger."""
    from airflow.triggers.callback import CallbackTrigger

    async def run():
        trigger = CallbackTrigger("factory_platform.alerts.WebhookNotifier",
                                  {"context": context})
        return [event.payload async for event in trigger.run()]

    return asyncio.run(run())


def test_a_missed_deadline_is_alerted_once_by_the_triggerer(webhook, secret, caplog):
    with caplog.at_level(logging.INFO):
        events = _trigger(_run_context("scheduled"))
    assert [str(e["state"]) for e in events] == ["running", "success"], events
    assert [post["path"] for post in webhook.posts] == [f"/hooks/{secret}"]
    alert = webhook.alerts[0]
    assert alert["title"] == "Airflow run late: extract_mes"
    assert alert["run_id"] == "scheduled__2026-12-03T04:00"
    assert "not finished by its deadline 2026-12-03T04:40:02Z" in alert["text"]
    assert secret not in caplog.text


def test_a_backfill_run_waiting_for_its_turn_is_not_alerted(webhook):
    events = _trigger(_run_context("backfill"))
    assert [str(e["state"]) for e in events] == ["running", "success"], events
    assert webhook.posts == []


@pytest.mark.slow
def test_a_queued_run_gets_the_extraction_deadline_in_the_metadata_db():
    """What the scheduler acts on: a run of a DAG with QMS's extraction deadline, queued as the
    API queues it, gets one Deadline row, due 15 min + 10 min after it was queued, whose
    callback is the notifier (rolled back: the metadata DB keeps nothing of it)."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from airflow.models.dagbag import DBDagBag
    from airflow.models.deadline import Deadline
    from airflow.sdk import dag, task
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from factory_platform.dag_factory import START_DATE, default_args
    from factory_platform.source_watch import extraction_deadline
    from factory_platform.sources import get_source
    from sqlalchemy import select

    @dag(dag_id="deadline_probe", schedule=None, start_date=START_DATE, catchup=False,
         default_args=default_args(), deadline=extraction_deadline(get_source("qms")))
    def probe():
        @task
        def load_inspection_lots():
            pass

        load_inspection_lots()

    registered(probe())
    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag("deadline_probe", session=session)
        run = dag.create_dagrun(
            run_id=f"manual__deadline_probe_{uuid.uuid4().hex[:8]}", logical_date=None,
            data_interval=None, run_after=datetime.now(UTC), conf={},
            run_type=DagRunType.MANUAL, triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.QUEUED, session=session)
        session.flush()
        deadlines = session.scalars(select(Deadline).where(Deadline.dagrun_id == run.id)).all()
        found = [(d.deadline_time - run.queued_at, d.callback.data.get("path"))
                 for d in deadlines]
        session.rollback()
    assert found == [(timedelta(minutes=25), "factory_platform.alerts.WebhookNotifier")]
