"""A tiny HTTP server that misbehaves on purpose, for the REST client's fault tests.

`FaultServer(answer)` serves on 127.0.0.1 (a free port) in a thread. For every request it
records what arrived (`Request`: path, query, headers) and sends what `answer(request, n)`
returns (`Reply`; n counts from 1): a status, a body, headers, and optionally a drip — the
body (or the status line and headers too) sent a byte at a time with a pause between bytes,
until the client hangs up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip_s: float | None = None  # pause between bytes
    drip_headers: bool = False  # drip from the status line on, not only the body
    drip_for_s: float = 10.0  # the drip gives up after this long (the test has failed by then)


def page(records: list, next_cursor=None) -> Reply:
    return Reply(body=json.dumps({"data": records, "next_cursor": next_cursor}).encode())


def paged(records: list, page_size: int) -> Callable[[Request], Reply]:
    """The documented API: `page_size` records per page, the cursor an opaque offset."""
    def answer(request: Request) -> Reply:
        offset = int(request.query.get("cursor", "0"))
        rest = records[offset + page_size:]
        return page(records[offset:offset + page_size],
                    str(offset + page_size) if rest else None)
    return answer


class FaultServer:
    def __init__(self, answer: Callable[[Request, int], Reply]) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                return

            def do_GET(self):
                url = urlsplit(self.path)
                request = Request(path=url.path,
                                  query={k: v[0] for k, v in parse_qs(url.query).items()},
                                  headers=dict(self.headers.items()))
                with server._lock:
                    server.requests.append(request)
                    n = len(server.requests)
                reply = server.answer(request, n)
                head = [f"HTTP/1.1 {reply.status} X\r\n",
                        "Content-Type: application/json\r\n",
                        f"Content-Length: {len(reply.body)}\r\n",
                        *(f"{k}: {v}\r\n" for k, v in reply.headers.items()), "\r\n"]
                head_bytes = "".join(head).encode()
                try:
                    if reply.drip_s is None:
                        self.wfile.write(head_bytes + reply.body)
                        self.wfile.flush()
                        return
                    if not reply.drip_headers:
                        self.wfile.write(head_bytes)
                        self.wfile.flush()
                    data = (head_bytes if reply.drip_headers else b"") + reply.body
                    stop = time.monotonic() + reply.drip_for_s
                    for i in range(len(data)):
                        if time.monotonic() > stop:
                            break
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(reply.drip_s)
                    self.close_connection = True
                except OSError:  # the client hung up (as it should, at its deadline)
                    self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
