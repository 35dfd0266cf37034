"""HTTP JSON servers for the MES (and the QMS): keyset-paginated change feeds from SQLite.

One `ThreadingHTTPServer` per system, each in its own thread, sharing one `Clock`. Records are
visible only when `updated_at <= clock`. Faults can be injected for tests via `/_admin/faults`.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from plant_sim.timeutil import iso, parse_iso_utc

MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
ALLOWED_PARAMS = {"updated_since", "updated_before", "limit", "cursor"}


class Clock:
    """The simulated 'now'. Batch: fixed at the data horizon. Live: start + speed × elapsed."""

    def __init__(
        self, mode: str, start: int, speed: float = 1.0, horizon: int | None = None
    ):
        if mode not in ("batch", "live"):
            raise ValueError("clock must be batch or live")
        self.mode = mode
        self.start = start
        self.speed = speed
        self.horizon = horizon if horizon is not None else start
        self._t0 = time.monotonic()

    def now(self) -> int:
        """Current simulated epoch second."""
        if self.mode == "batch":
            return self.horizon
        return self.start + int((time.monotonic() - self._t0) * self.speed)


def encode_cursor(updated_at: int, rec_id: str) -> str:
    """Opaque keyset cursor."""
    return (
        base64.urlsafe_b64encode(f"{updated_at}|{rec_id}".encode()).decode().rstrip("=")
    )


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Inverse of `encode_cursor`; raises ValueError on anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        u, rec_id = raw.split("|", 1)
        return int(u), rec_id
    except Exception as exc:
        raise ValueError("invalid cursor") from exc


class FeedApi:
    """State of one served API: database, entities, key, faults, counters."""

    def __init__(
        self,
        name: str,
        db: Path,
        entities: dict[str, tuple[str, str]],
        clock: Clock,
        api_key: str | None = None,
    ) -> None:
        self.name = name
        self.db = db
        self.entities = entities
        self.clock = clock
        self.api_key = api_key
        self.lock = threading.Lock()
        self.fault_status = 0
        self.fault_count = 0
        self.fault_retry_after = 1
        self.data_requests = 0
        self.faulted = 0
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        """A read-only connection per server thread."""
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(
                f"file:{self.db}?mode=ro&immutable=1", uri=True, check_same_thread=False
            )
            self._local.conn = c
        return c

    def take_fault(self) -> tuple[int, int] | None:
        """Count a data request; return (status, retry_after) if a fault is pending."""
        with self.lock:
            self.data_requests += 1
            if self.fault_count > 0:
                self.fault_count -= 1
                self.faulted += 1
                return self.fault_status, self.fault_retry_after
        return None

    def page(self, entity: str, params: dict[str, list[str]]) -> dict[str, Any] | bytes:
        """Answer one data request (raises ValueError for a 400)."""
        unknown = set(params) - ALLOWED_PARAMS
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        for k, v in params.items():
            if len(v) != 1:
                raise ValueError(f"parameter {k} given more than once")
        p = {k: v[0] for k, v in params.items()}
        try:
            since = (
                parse_iso_utc(p["updated_since"]) if "updated_since" in p else -(2**62)
            )
            before = (
                parse_iso_utc(p["updated_before"]) if "updated_before" in p else 2**62
            )
        except ValueError as exc:
            raise ValueError(f"bad timestamp: {exc}") from exc
        try:
            limit = int(p.get("limit", DEFAULT_LIMIT))
        except ValueError as exc:
            raise ValueError("limit must be an integer 1..1000") from exc
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError("limit must be an integer 1..1000")
        upper = min(before, self.clock.now() + 1)
        table, _id = self.entities[entity]
        sql = f"SELECT updated_at, id, body FROM {table} WHERE updated_at >= ? AND updated_at < ?"
        args: list[Any] = [since, upper]
        if "cursor" in p:
            cu, cid = decode_cursor(p["cursor"])
            sql += " AND (updated_at, id) > (?, ?)"
            args += [cu, cid]
        sql += " ORDER BY updated_at, id LIMIT ?"
        args.append(limit + 1)
        rows = self.conn().execute(sql, args).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1][0], rows[-1][1]) if more else None
        body = (
            '{"data":['
            + ",".join(r[2] for r in rows)
            + '],"next_cursor":'
            + json.dumps(nxt)
            + "}"
        )
        return body.encode("utf-8")


def make_handler(api: FeedApi) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `api`."""

    class Handler(BaseHTTPRequestHandler):
        server_version = f"plant-sim-{api.name}/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(
            self, status: int, body: Any, headers: dict[str, str] | None = None
        ) -> None:
            data = (
                body
                if isinstance(body, bytes)
                else json.dumps(body, ensure_ascii=False).encode()
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Server-Clock", iso(api.clock.now()))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if api.api_key and self.headers.get("X-API-Key") != api.api_key:
                self._send(
                    401,
                    {"error": "unauthorized", "detail": "missing or wrong X-API-Key"},
                )
                return False
            return True

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = [x for x in url.path.split("/") if x]
            if parts == ["api", "v1", "health"]:
                self._send(
                    200,
                    {
                        "status": "ok",
                        "system": api.name,
                        "clock": iso(api.clock.now()),
                        "entities": list(api.entities),
                    },
                )
                return
            if not self._authorized():
                return
            if parts == ["_admin", "requests"]:
                with api.lock:
                    self._send(
                        200,
                        {"data_requests": api.data_requests, "faulted": api.faulted},
                    )
                return
            if len(parts) != 3 or parts[:2] != ["api", "v1"]:
                self._send(404, {"error": "not_found", "detail": url.path})
                return
            entity = parts[2]
            if entity not in api.entities:
                self._send(
                    404, {"error": "not_found", "detail": f"unknown entity {entity}"}
                )
                return
            fault = api.take_fault()
            if fault:
                status, retry = fault
                headers = {"Retry-After": str(retry)} if status == 429 else None
                self._send(
                    status, {"error": "injected_fault", "status": status}, headers
                )
                return
            try:
                body = api.page(entity, parse_qs(url.query, keep_blank_values=True))
            except ValueError as exc:
                self._send(400, {"error": "bad_request", "detail": str(exc)})
                return
            self._send(200, body)

        def do_POST(self) -> None:
            if not self._authorized():
                return
            path = urlsplit(self.path).path.rstrip("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            if path == "/_admin/reset":
                with api.lock:
                    api.fault_count = api.data_requests = api.faulted = 0
                self._send(200, {"ok": True})
                return
            if path != "/_admin/faults":
                self._send(404, {"error": "not_found", "detail": path})
                return
            try:
                spec = json.loads(raw or b"{}")
                status = int(spec["status"])
                count = int(spec.get("count", 1))
                retry = int(spec.get("retry_after", 1))
                if not (400 <= status <= 599) or count < 0:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                self._send(
                    400,
                    {
                        "error": "bad_request",
                        "detail": 'expected {"status": 4xx|5xx, "count": n}',
                    },
                )
                return
            with api.lock:
                api.fault_status, api.fault_count, api.fault_retry_after = (
                    status,
                    count,
                    retry,
                )
            self._send(200, {"ok": True, "pending": count})

    return Handler


def start_api(api: FeedApi, host: str, port: int) -> ThreadingHTTPServer:
    """Start serving `api` on host:port in a daemon thread; returns the server."""
    httpd = ThreadingHTTPServer((host, port), make_handler(api))
    httpd.daemon_threads = True
    threading.Thread(
        target=httpd.serve_forever, name=f"{api.name}-http", daemon=True
    ).start()
    return httpd


def max_updated_at(db: Path, entities: dict[str, tuple[str, str]]) -> int:
    """Greatest updated_at in a feed database (the batch clock's horizon)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        vals = [
            conn.execute(f"SELECT max(updated_at) FROM {t}").fetchone()[0]
            for t, _ in entities.values()
        ]
    finally:
        conn.close()
    return max((v for v in vals if v is not None), default=0)
