"""Alerts: a log line always, and a JSON POST to a webhook when one is configured.

**Where the webhook comes from.** The Airflow connection `alert_webhook` (ALERT_CONN_ID), so the
URL's secret part is the connection's password and Airflow's secrets masker hides it wherever a
task or the triggerer would log it. Fields, as Airflow's HTTP connection uses them: `host`,
`port`, `schema` (`https` or `http`; default https), the secret as `password`, and
`extra.path`, the URL's path with `{password}` where the secret goes (Slack/Teams-style
incoming webhooks carry it in the path); a path without the placeholder sends the secret as an
`Authorization: Bearer` header instead. In the environment, e.g.::

    AIRFLOW_CONN_ALERT_WEBHOOK='{"conn_type": "http", "host": "hooks.example.com",
        "schema": "https", "password": "T000/B000/XXXX", "extra": {"path": "/services/{password}"}}'

`SFDP_ALERT_WEBHOOK_URL` (a whole URL) is still read when the connection is not defined, for
deployments that set it before the connection existed; its URL is registered with the masker
too. Nothing else (no Airflow Variable: a Variable is shown in plain text in the UI). The URL
is never logged: a failed POST names the host only.

**Who alerts.** `WebhookNotifier` is an Airflow notifier (`airflow.sdk.BaseNotifier`): every
DAG's `on_failure_callback` (dag_factory.default_args; the message names the DAG, task, run and
the exception — for a failing quality gate the check or expectation that failed) and, run by
the triggerer, the callback of a `DeadlineAlert` (source_watch.extraction_deadline: a run not
finished in time).
`send_alert` is the same POST for code that alerts on its own (incidents, blocked scopes, a
source not seen). Slack/Teams-style webhooks accept the `text` field of the JSON.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow.sdk import BaseNotifier

log = logging.getLogger("factory_platform.alerts")

ALERT_CONN_ID = "alert_webhook"
LEGACY_URL_ENV = "SFDP_ALERT_WEBHOOK_URL"
PASSWORD_PLACEHOLDER = "{password}"


@dataclass(frozen=True)
class Webhook:
    """Where alerts are POSTed. `url` and `headers` may hold the secret: never log them,
    log `label` (scheme, host and port)."""

    url: str = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def webhook_from_connection(conn, extra: dict | None = None) -> Webhook | None:
    """The webhook an Airflow connection describes (see the module docstring), `extra` its
    parsed extra if already read; None without a host."""
    if not conn or not conn.host:
        return None
    scheme = conn.schema if conn.schema in ("http", "https") else "https"
    if extra is None:
        extra = conn.extra_dejson if conn.extra else {}
    path = str(extra.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    headers = {}
    if conn.password and PASSWORD_PLACEHOLDER in path:
        path = path.replace(PASSWORD_PLACEHOLDER, conn.password)
    elif conn.password:
        headers["Authorization"] = f"Bearer {conn.password}"
    port = f":{conn.port}" if conn.port else ""
    return Webhook(f"{scheme}://{conn.host}{port}{path}", headers)


def _legacy_webhook() -> Webhook | None:
    url = os.environ.get(LEGACY_URL_ENV)
    if not url:
        return None
    _mask(url)
    path = urlsplit(url).path.strip("/")
    if len(path) >= 5:  # a token in the path (a shorter one the masker would refuse anyway)
        _mask(path)
    return Webhook(url)


def webhook(conn_id: str = ALERT_CONN_ID) -> Webhook | None:
    """The configured webhook: connection `conn_id`, else the legacy URL variable, else None."""
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 — not defined (AirflowNotFoundException) or no Airflow
        conn = None
    if conn is not None:
        _mask(conn.password)  # the task SDK does it too; outside a task it may not
        return webhook_from_connection(conn)
    return _legacy_webhook()


async def awebhook(conn_id: str = ALERT_CONN_ID) -> Webhook | None:
    """`webhook` for async code (the triggerer): the connection read and masked without
    blocking calls into the supervisor."""
    try:
        from airflow.sdk import BaseHook

        conn = await BaseHook.aget_connection(conn_id)
    except Exception:  # noqa: BLE001 — not defined, or no Airflow
        conn = None
    if conn is not None:
        if conn.password:
            from airflow.sdk.log import amask_secret

            await amask_secret(conn.password)
        # not conn.extra_dejson: its synchronous masking call must not run in the event loop
        extra = await conn.aextra_dejson() if conn.extra else {}
        return webhook_from_connection(conn, extra)
    return _legacy_webhook()


def _mask(value: str | None) -> None:
    """Register `value` with Airflow's secrets masker (no-op outside Airflow or when empty).
    Not factory_platform.warehouse.mask_secret: warehouse imports what imports this module."""
    if not value:
        return
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover — plain scripts without Airflow
        return
    mask_secret(value)


def redact(value):
    """`value` with every secret Airflow's secrets masker knows (connection passwords and
    whatever a task registered) replaced by ***; unchanged outside Airflow."""
    try:
        from airflow.sdk.log import redact as _redact
    except ImportError:  # pragma: no cover — plain scripts without Airflow
        return value
    return _redact(value)


def post_alert(hook: Webhook | None, title: str, text: str, **details) -> bool:
    """Log the alert; POST it to `hook` if there is one. True when the webhook took it.
    Title, text and details are redacted first: an alert never carries a secret."""
    title, text, details = redact(title), redact(text), redact(details)
    log.error("ALERT %s: %s", title, text)
    if hook is None:
        return False
    body = json.dumps({"title": title, "text": f"{title}\n{text}", **details},
                      default=str).encode()
    request = urllib.request.Request(hook.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **hook.headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return 200 <= response.status < 300
    except OSError as exc:  # an alert must never fail the task a second time
        log.warning("alert webhook %s failed: %s", hook.label,
                    redact(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"))
        return False


def send_alert(title: str, text: str, **details) -> bool:
    """Log the alert; POST it to the configured webhook. True when the webhook took it."""
    return post_alert(webhook(), title, text, **details)


def task_failure_message(context) -> tuple[str, str, dict]:
    """Title, text and details of a failed task's alert: which task of which run, and why."""
    ti = context.get("ti") or context.get("task_instance")
    exception = context.get("exception")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    text = (f"run {context.get('run_id')}, try {getattr(ti, 'try_number', '?')}: "
            f"{type(exception).__name__ if exception else 'failed'}: {exception}")
    return (f"Airflow task failed: {dag_id}.{task_id}", text,
            {"dag_id": dag_id, "task_id": task_id, "run_id": context.get("run_id")})


def deadline_message(context) -> tuple[str, str, dict] | None:
    """Title, text and details of a missed DeadlineAlert (the triggerer's context: the run as
    the API returns it, and the deadline); None for a backfill run, whose runs wait for their
    turn by design (a backfill of many intervals would otherwise alert for each)."""
    run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    if "backfill" in str(run.get("run_type") or "").lower():
        log.info("deadline of backfill run %s passed: not alerted", run.get("dag_run_id"))
        return None
    dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id") or run.get("run_id", "?")
    text = (f"run {run_id} (data interval {run.get('data_interval_start')} – "
            f"{run.get('data_interval_end')}, queued {run.get('queued_at')}) is not finished by "
            f"its deadline {deadline.get('deadline_time')}; state {run.get('state')}")
    return (f"Airflow run late: {dag_id}", text,
            {"dag_id": dag_id, "run_id": run_id, "deadline": deadline.get("deadline_time")})


class WebhookNotifier(BaseNotifier):
    """Alerts through the `alert_webhook` connection: synchronously as a task's
    `on_failure_callback` (`notify`), asynchronously in the triggerer as a DeadlineAlert's
    callback (`async_notify`: `AsyncCallback(WebhookNotifier, kwargs={...})`).

    With `title`/`text` it sends that message; without, the message of the event (a failed
    task, a missed deadline)."""

    def __init__(self, title: str | None = None, text: str | None = None,
                 conn_id: str = ALERT_CONN_ID, context=None):
        super().__init__(context=context)
        self.title = title
        self.text = text
        self.conn_id = conn_id

    def _message(self, context, default) -> tuple[str, str, dict] | None:
        if self.title:
            return self.title, self.text or "", {}
        return default(context)

    def notify(self, context) -> None:
        message = self._message(context, task_failure_message)
        if message:
            title, text, details = message
            post_alert(webhook(self.conn_id), title, text, **details)

    async def async_notify(self, context) -> None:
        import asyncio

        message = self._message(context, deadline_message)
        if message:
            title, text, details = message
            hook = await awebhook(self.conn_id)
            await asyncio.to_thread(post_alert, hook, title, text, **details)


