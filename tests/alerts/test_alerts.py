"""A failing task alerts: a log line and a JSON POST to the configured webhook, naming the
DAG, the task, the run and the error (Airflow's on_failure_callback from dag_factory)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from _dags import registered


@pytest.fixture
def webhook(monkeypatch):
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SFDP_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    yield received
    server.shutdown()


def test_a_failing_task_posts_an_alert_naming_task_and_error(webhook):
    from airflow.sdk import dag, task
    from factory_platform.dag_factory import START_DATE, default_args

    @dag(dag_id="alert_probe", schedule=None, start_date=START_DATE, catchup=False,
         default_args={**default_args(), "retries": 0})
    def probe():
        @task
        def check_sensor_ranges():
            raise ValueError("expect_column_values_to_be_between(value) failed in 3 scopes")

        check_sensor_ranges()

    run = registered(probe()).test()
    assert str(run.state) == "failed"
    assert len(webhook) == 1
    alert = webhook[0]
    assert alert["dag_id"] == "alert_probe"
    assert alert["task_id"] == "check_sensor_ranges"
    assert "expect_column_values_to_be_between(value) failed in 3 scopes" in alert["text"]
    assert alert["run_id"] == run.run_id


def test_without_a_webhook_an_alert_is_only_logged(monkeypatch, caplog):
    from factory_platform.alerts import send_alert

    monkeypatch.delenv("SFDP_ALERT_WEBHOOK_URL", raising=False)
    with caplog.at_level("ERROR", logger="factory_platform.alerts"):
        assert send_alert("Scope blocked", "ERF 2026-10-20: gate_confirmation_order_known") is False
    assert "Scope blocked" in caplog.text
