"""HTTP JSON servers for the MES (and the QMS): keyset-paginated change feeds from SQLite.

One `ThreadingHTTPServer` per system, each in its own thread, sharing one `Clock`. Records are
visible only when `updated_at <= clock`. Faults: error statuses via `/_admin/faults`, and the
delivery faults of `faults.py` (stalls, empty answers, stuck cursors, cut-off JSON) from the
`[faults.<system>]` config or `/_admin/faults` with a `kind`.
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

from plant_sim.faults import API_KINDS, ApiDecision, ApiFaults
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

    def now_ms(self) -> int:
        """Current simulated epoch millisecond (the shop floor's signals carry milliseconds)."""
        if self.mode == "batch":
            return self.horizon * 1000
        return int((self.start + (time.monotonic() - self._t0) * self.speed) * 1000)


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


class Page:
    """One answered data request before it is encoded."""

    def __init__(
        self,
        rows: list[str],
        next_cursor: str | None,
        cursor_sent: str | None,
        window_key: str,
    ) -> None:
        self.rows = rows
        self.next_cursor = next_cursor
        self.cursor_sent = cursor_sent
        self.window_key = window_key

    def body(self, next_cursor: str | None | bool = True) -> bytes:
        """`{"data": [...], "next_cursor": ...}` (`next_cursor` True: the true one)."""
        nxt = self.next_cursor if next_cursor is True else next_cursor
        return (
            '{"data":['
            + ",".join(self.rows)
            + '],"next_cursor":'
            + json.dumps(nxt)
            + "}"
        ).encode("utf-8")


class FeedApi:
    """State of one served API: database, entities, key, faults, counters."""

    def __init__(
        self,
        name: str,
        db: Path,
        entities: dict[str, tuple[str, str]],
        clock: Clock,
        api_key: str | None = None,
        faults: ApiFaults | None = None,
        status: Any = None,
    ) -> None:
        self.name = name
        self.db = db
        self.entities = entities
        self.clock = clock
        self.api_key = api_key
        self.faults = faults
        self.status = (
            status  # callable → extra health fields (the runtime's drop status)
        )
        self.closing = threading.Event()
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

    def page(self, entity: str, params: dict[str, list[str]]) -> bytes:
        """Answer one data request (raises ValueError for a 400)."""
        return self.query(entity, params).body()

    def query(self, entity: str, params: dict[str, list[str]]) -> Page:
        """The page for one data request (raises ValueError for a 400)."""
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
        window = "&".join(f"{k}={v}" for k, v in sorted(p.items()) if k != "cursor")
        return Page(
            [r[2] for r in rows],
            nxt,
            p.get("cursor"),
            f"{entity}?{window}",
        )


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

        def _send_dripping(
            self, body: bytes, seconds: float, bytes_per_second: float
        ) -> None:
            """200 with the full Content-Length, then the body a few bytes at a time for
            `seconds` (every write well within a second), then the rest at once."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Server-Clock", iso(api.clock.now()))
            self.end_headers()
            self.wfile.flush()
            step = 0.25
            per_step = max(1, round(bytes_per_second * step))
            deadline = time.monotonic() + seconds
            pos = 0
            while pos < len(body) - 1 and not api.closing.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.wfile.write(body[pos : min(pos + per_step, len(body) - 1)])
                self.wfile.flush()
                pos = min(pos + per_step, len(body) - 1)
                api.closing.wait(min(step, left))
            if api.closing.is_set():
                self.close_connection = True
                return
            left = deadline - time.monotonic()
            if (
                left > 0
            ):  # body shorter than the stall: hold the last byte until the end
                api.closing.wait(left)
            self.wfile.write(body[pos:])

        def _send_faulted(self, page: Page, d: ApiDecision) -> None:
            if d.kind == "api_empty":
                self._send(200, b'{"data":[],"next_cursor":null}')
            elif d.kind == "api_stuck_cursor":
                self._send(200, page.body(d.next_cursor))
            elif d.kind == "api_malformed_json":
                body = page.body()
                self._send(200, body[: max(1, len(body) // 2)])
            else:
                self._send_dripping(page.body(), d.seconds, d.bytes_per_second)

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
                health = {
                    "status": "ok",
                    "system": api.name,
                    "clock": iso(api.clock.now()),
                    "entities": list(api.entities),
                }
                if api.status is not None:
                    health.update(api.status())
                self._send(200, health)
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
            if parts == ["_admin", "faults"]:
                f = api.faults
                self._send(
                    200,
                    {
                        "counts": dict(f.counts) if f else {},
                        "injected": f.journal.snapshot(api.name)
                        if f and f.journal
                        else [],
                    },
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
                page = api.query(entity, parse_qs(url.query, keep_blank_values=True))
            except ValueError as exc:
                self._send(400, {"error": "bad_request", "detail": str(exc)})
                return
            decision = (
                api.faults.decide(
                    entity,
                    f"GET {self.path}",
                    page.window_key,
                    page.cursor_sent,
                    len(page.rows),
                )
                if api.faults is not None
                else None
            )
            if decision is None:
                self._send(200, page.body())
                return
            with api.lock:
                api.faulted += 1
            self._send_faulted(page, decision)

        def do_POST(self) -> None:
            if not self._authorized():
                return
            path = urlsplit(self.path).path.rstrip("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            if path == "/_admin/reset":
                with api.lock:
                    api.fault_count = api.data_requests = api.faulted = 0
                if api.faults is not None:
                    api.faults.disarm()
                self._send(200, {"ok": True})
                return
            if path != "/_admin/faults":
                self._send(404, {"error": "not_found", "detail": path})
                return
            try:
                spec = json.loads(raw or b"{}")
            except ValueError:
                spec = None
            if isinstance(spec, dict) and "kind" in spec:
                self._arm(spec)
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

        def _arm(self, spec: dict[str, Any]) -> None:
            """`{"kind": "api_stall", "count": 2, "seconds": 3}`: the next eligible requests."""
            try:
                kind = str(spec["kind"])
                if not kind.startswith("api_"):
                    kind = f"api_{kind}"
                if kind not in API_KINDS or api.faults is None:
                    raise ValueError(f"unknown kind {spec['kind']!r}")
                count = int(spec.get("count", 1))
                if count < 0:
                    raise ValueError("count must be >= 0")
                params = {k: v for k, v in spec.items() if k not in ("kind", "count")}
                api.faults.arm(kind, count, **params)
            except (ValueError, KeyError, TypeError) as exc:
                self._send(
                    400,
                    {
                        "error": "bad_request",
                        "detail": f"{exc}; kinds: {', '.join(API_KINDS)}",
                    },
                )
                return
            self._send(200, {"ok": True, "kind": kind, "pending": count})

    return Handler


def start_api(api: FeedApi, host: str, port: int) -> ThreadingHTTPServer:
    """Start serving `api` on host:port in a daemon thread; returns the server."""
    httpd = ThreadingHTTPServer((host, port), make_handler(api))
    httpd.daemon_threads = True
    threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.1},
        name=f"{api.name}-http",
        daemon=True,
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
