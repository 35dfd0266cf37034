"""A real webhook receiver for alert tests (an HTTP server in a thread), and the Airflow
connection that points the platform's alerts at it. Imported as `_webhook`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class Receiver:
    """A real webhook endpoint: every POST's path, Authorization header and JSON body."""

    def __init__(self):
        self.posts: list[dict] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                 "json": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def alerts(self) -> list[dict]:
        return [post["json"] for post in self.posts]


def webhook_connection(port: int, secret: str, path: str = "/hooks/{password}") -> str:
    return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http",
                       "password": secret, "extra": {"path": path}})
