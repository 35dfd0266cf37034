"""REST client for plant APIs with `updated_since` cursors and keyset pagination (MES, QMS).

Memory is bounded by one page. 5xx answers and timeouts are retried with exponential backoff;
429 waits for `Retry-After`. Every record carries its page as `source` so a quarantined record
can be traced back to the request that delivered it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from factory_platform.extract.loader import Extraction, SourceRecord

log = logging.getLogger(__name__)


class SourceUnavailable(RuntimeError):
    """The API kept failing after every retry."""


@dataclass(frozen=True)
class RestEndpoint:
    base_url: str
    api_key: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 5
    backoff_s: float = 0.5
    max_wait_s: float = 60.0


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iter_records(
    endpoint: RestEndpoint, path: str, since: datetime, before: datetime, id_field: str,
    page_size: int = 500, session=None,
) -> Iterator[SourceRecord]:
    """Yield every record with `since <= updated_at < before`, page by page."""
    import requests

    http = session or requests.Session()
    params = {"updated_since": _iso(since), "updated_before": _iso(before), "limit": page_size}
    cursor: str | None = None
    page = 0
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        url = f"{endpoint.base_url.rstrip('/')}{path}?{urlencode(query)}"
        body = _get_json(http, endpoint, url)
        page += 1
        source = f"{path} page {page} (updated_since={params['updated_since']})"
        for index, record in enumerate(body.get("data", [])):
            ref = str(record.get(id_field) or f"#{index}") if isinstance(record, dict) else f"#{index}"
            if not isinstance(record, dict):
                record = {"_unparseable": record}
            yield SourceRecord(source=source, record_ref=ref, payload=record)
        cursor = body.get("next_cursor")
        if not cursor:
            return


def _get_json(http, endpoint: RestEndpoint, url: str) -> dict:
    import requests

    headers = {"Accept": "application/json"}
    if endpoint.api_key:
        headers["X-API-Key"] = endpoint.api_key
    last_problem = ""
    for attempt in range(endpoint.max_retries + 1):
        try:
            response = http.get(url, headers=headers, timeout=endpoint.timeout_s)
        except (requests.ConnectionError, requests.Timeout) as exc:
            last_problem = f"{type(exc).__name__}: {exc}"
            wait = endpoint.backoff_s * 2**attempt
        else:
            if response.status_code == 200:
                return response.json()
            last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code == 429:
                wait = _retry_after(response.headers.get("Retry-After"), endpoint, attempt)
            elif response.status_code >= 500:
                wait = endpoint.backoff_s * 2**attempt
            else:
                raise SourceUnavailable(f"GET {url} answered {last_problem}")
        if attempt == endpoint.max_retries:
            break
        wait = min(wait, endpoint.max_wait_s)
        log.warning("GET %s: %s — retry %d/%d in %.1f s", url, last_problem, attempt + 1,
                    endpoint.max_retries, wait)
        time.sleep(wait)
    raise SourceUnavailable(
        f"GET {url} failed after {endpoint.max_retries + 1} attempts; last answer {last_problem}"
    )


def _retry_after(header: str | None, endpoint: RestEndpoint, attempt: int) -> float:
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    return endpoint.backoff_s * 2**attempt


def open_extraction(source, entity, window) -> Extraction:
    """Client entry point (see `extract.clients`): the entity's records updated in the window."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(source.conn_id)
    scheme = conn.extra_dejson.get("scheme", "http")
    port = f":{conn.port}" if conn.port else ""
    endpoint = RestEndpoint(base_url=f"{scheme}://{conn.host}{port}", api_key=conn.password or None)
    records = iter_records(endpoint, entity.endpoint, window.start, window.end,
                           id_field=entity.natural_key[0], page_size=source.page_size)
    return Extraction(records=records, source_label=f"{endpoint.base_url}{entity.endpoint}")
