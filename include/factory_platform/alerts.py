"""Alerts: a log line always, and a JSON POST to a webhook when one is configured.

The webhook URL comes from the environment variable `SFDP_ALERT_WEBHOOK_URL` (or the Airflow
Variable `alert_webhook_url`); Slack/Teams-style incoming webhooks accept the `text` field.
`task_failure_alert` is every DAG's `on_failure_callback` (dag_factory.default_args): the
message names the DAG, task, run and the exception — for a failing quality gate that is the
check or expectation that failed.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request

log = logging.getLogger("factory_platform.alerts")


def webhook_url() -> str | None:
    url = os.environ.get("SFDP_ALERT_WEBHOOK_URL")
    if url:
        return url
    try:
        from airflow.sdk import Variable

        return Variable.get("alert_webhook_url", default=None)
    except Exception:  # noqa: BLE001 — no Airflow context (CLI, tests): environment only
        return None


def redact(value):
    """`value` with every secret Airflow's secrets masker knows (connection passwords and
    whatever a task registered) replaced by ***; unchanged outside Airflow."""
    try:
        from airflow.sdk.log import redact as _redact
    except ImportError:  # pragma: no cover — plain scripts without Airflow
        return value
    return _redact(value)


def send_alert(title: str, text: str, **details) -> bool:
    """Log the alert; POST it to the webhook if configured. True when the webhook took it.
    Title, text and details are redacted first: an alert never carries a secret."""
    title, text, details = redact(title), redact(text), redact(details)
    log.error("ALERT %s: %s", title, text)
    url = webhook_url()
    if not url:
        return False
    body = json.dumps({"title": title, "text": f"{title}\n{text}", **details},
                      default=str).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return 200 <= response.status < 300
    except OSError as exc:  # an alert must never fail the task a second time
        log.warning("alert webhook %s failed: %s", url, exc)
        return False


def task_failure_alert(context) -> None:
    """on_failure_callback: which task of which run failed, and why."""
    ti = context.get("ti") or context.get("task_instance")
    exception = context.get("exception")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    send_alert(f"Airflow task failed: {dag_id}.{task_id}",
               f"run {context.get('run_id')}, try {getattr(ti, 'try_number', '?')}: "
               f"{type(exception).__name__ if exception else 'failed'}: {exception}",
               dag_id=dag_id, task_id=task_id, run_id=context.get("run_id"))
