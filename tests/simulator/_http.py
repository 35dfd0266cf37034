"""A tiny stdlib HTTP client for the tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def call(
    url: str,
    key: str | None = "k3y",
    method: str = "GET",
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """Return (status, headers, decoded JSON) without raising on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if key:
        req.add_header("X-API-Key", key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def fetch_all(
    base: str, entity: str, limit: int = 137, **window: str
) -> list[dict[str, Any]]:
    """Page through an entity with the cursor; returns every record."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = [f"limit={limit}"] + [f"{k}={v}" for k, v in window.items()]
        if cursor:
            q.append(f"cursor={cursor}")
        status, _h, payload = call(f"{base}/{entity}?" + "&".join(q))
        assert status == 200, payload
        out.extend(payload["data"])
        cursor = payload["next_cursor"]
        if cursor is None:
            return out
