"""A small CRM's REST API, served on 127.0.0.1 (a free port) in a thread: the ninth system of
the add-a-system test, with a paging style and an auth no plant system uses.

    GET /crm/v2/contacts?modified_from=<ISO>&modified_to=<ISO>&page=<n>&per_page=<m>
    Authorization: Bearer <token>
    → {"results": [...], "page": n, "per_page": m', "total_pages": p}

Contacts whose `modified_at` lies in `[modified_from, modified_to)`, ordered by
(`modified_at`, `contact_id`); pages numbered from 1 and at most `MAX_PER_PAGE` contacts each,
whatever `per_page` asks. Without the right token: 401. Every request is recorded.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

MAX_PER_PAGE = 3
T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)  # the contacts change within [T0, T0 + 4 h)


def _at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _contact(contact_id, account, email, country, stage, revenue, created, modified) -> dict:
    return {"contact_id": contact_id, "account_name": account, "email": email,
            "country": country, "lifecycle_stage": stage, "annual_revenue_eur": revenue,
            "created_at": _at(created), "modified_at": _at(modified)}


# The CRM's change feed: C-104 changes twice (prospect, then customer), C-107 has no e-mail
# (quarantined: required), C-109 changed before any window the test asks for, and 上海精密
# must survive every layer.
CONTACTS = [
    _contact("C-101", "Erfurt Metallbau GmbH", "Einkauf@metallbau.example", "de", "customer",
             4_200_000, -5000, 10),
    _contact("C-102", "上海精密机械有限公司", "purchasing@shjm.example", "cn", "customer",
             18_500_000, -4000, 20),
    _contact("C-103", "Nordic Bearings AB", "orders@nordic.example", "se", "lead", None,
             -100, 35),
    _contact("C-104", "Lyon Outillage SA", "achats@lyon-outillage.example", "fr", "prospect",
             2_100_000, -3000, 50),
    _contact("C-105", "Brno Castings s.r.o.", "nakup@brno.example", "cz", "lead", 900_000,
             -60, 65),
    _contact("C-106", "Torino Stampi S.p.A.", "acquisti@torino.example", "it", "prospect",
             5_600_000, -2000, 80),
    _contact("C-107", "No Mail Ltd", None, "gb", "lead", None, -10, 95),
    _contact("C-104", "Lyon Outillage SA", "achats@lyon-outillage.example", "fr", "customer",
             2_400_000, -3000, 130),
    _contact("C-108", "Porto Moldes Lda", "compras@porto.example", "pt", "customer",
             1_300_000, -9000, 170),
    _contact("C-109", "Old Contact GmbH", "old@contact.example", "at", "lead", None,
             -20000, -900),
]


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    authorization: str | None


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


class CrmApi:
    """`with CrmApi(token) as api:` serves CONTACTS at `api.url` until the block ends."""

    def __init__(self, token: str, contacts: list[dict] | None = None) -> None:
        self.token = token
        self.contacts = sorted(contacts or CONTACTS,
                               key=lambda c: (c["modified_at"], c["contact_id"]))
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                return

            def do_GET(self):
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with api._lock:
                    api.requests.append(Request(url.path, query,
                                                self.headers.get("Authorization")))
                status, body = api.answer(url.path, query, self.headers.get("Authorization"))
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, query: dict[str, str], authorization: str | None):
        if authorization != f"Bearer {self.token}":
            return 401, {"error": "unauthorized"}
        if path != "/crm/v2/contacts":
            return 404, {"error": f"no such resource {path}"}
        try:
            since, before = _parse(query["modified_from"]), _parse(query["modified_to"])
            page, per_page = int(query.get("page", "1")), int(query.get("per_page", "20"))
        except (KeyError, ValueError) as exc:
            return 400, {"error": f"bad query: {exc}"}
        per_page = max(1, min(per_page, MAX_PER_PAGE))
        found = [c for c in self.contacts if since <= _parse(c["modified_at"]) < before]
        total_pages = max(1, -(-len(found) // per_page))
        start = (page - 1) * per_page
        return 200, {"results": found[start:start + per_page], "page": page,
                     "per_page": per_page, "total_pages": total_pages}

    def served(self, since: datetime, before: datetime) -> list[dict]:
        """What the API holds for `[since, before)`."""
        return [c for c in self.contacts if since <= _parse(c["modified_at"]) < before]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
