"""What a REST source declares about its API: how a window is asked for, how its pages are
walked and how the platform proves who it is — in the shape of dlt's `rest_api` (a paginator
and an auth per source), so one client (`extract/rest.py`) serves every REST system.

    RestApi(
        window=("updated_since", "updated_before"),       # query parameters of [start, end)
        paginator=CursorPaginator(cursor_path="next_cursor", cursor_param="cursor"),
        auth=ApiKeyAuth(name="X-API-Key"),
    )

Paginators (`type` as in dlt): `cursor` (the answer names the next page's cursor; MES, QMS),
`offset` (offset/limit), `page_number` (page/per-page), `link_header` (the answer's
`Link: <…>; rel="next"` header). Auth: `api_key` (a header), `bearer`
(`Authorization: Bearer …`), `http_basic`. The secret is always the Airflow connection's
password (and, for basic, its login): nothing secret is declared here.

Everything in this module is plain Python (no HTTP library): the registry imports it when a
DAG file is parsed. A paginator only reads an answer and says which page comes next; the
client does the requests, the retries, the deadline and the refusals (a page that comes back
again, too many pages).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


class Malformed(Exception):
    """An answer that is not what the API declares (the client retries it like a 5xx)."""


def _at(body: Any, path: str | None, what: str) -> Any:
    """The value at a dotted `path` of a JSON object (`None`: the body itself)."""
    if path is None:
        return body
    value = body
    for part in path.split("."):
        if not isinstance(value, dict):
            raise Malformed(f"JSON {type(value).__name__}, not an object (looking for {what} "
                            f"'{path}')")
        if part not in value:
            raise Malformed(f"no '{path}' ({what})")
        value = value[part]
    return value


def records_at(body: Any, data_path: str | None) -> list:
    """The page's records: a list at `data_path` (or the body itself when it is None)."""
    if data_path is not None and not isinstance(body, dict):
        raise Malformed(f"JSON {type(body).__name__}, not an object")
    records = _at(body, data_path, "the records")
    if not isinstance(records, list):
        where = f"'{data_path}'" if data_path else "the answer"
        raise Malformed(f"{where} is {type(records).__name__}, not a list")
    return records


Token = str | int | None  # where a page is: a cursor, an offset, a page number or a URL


@dataclass(frozen=True)
class Paginator:
    """How the pages of one window are walked. `token` says which page: None for the first."""

    type: ClassVar[str] = ""
    follows_links: ClassVar[bool] = False  # the token is the next page's URL
    data_path: str | None = "data"  # where the records are (dotted; None: the body is the list)
    limit_param: str | None = "limit"  # the page-size parameter (None: the API's own size)

    def query(self, token: Token, page_size: int) -> dict[str, Any]:
        """The query parameters of the page `token` (besides the window's)."""
        return {self.limit_param: page_size} if self.limit_param else {}

    def read(self, body: Any, headers: Mapping[str, str], token: Token,
             page_size: int) -> tuple[list, Token]:
        """The page's records and the next page's token (None: this was the last page);
        raises Malformed."""
        raise NotImplementedError

    def describe(self, token: Token) -> str:
        """How an error names the next page an answer pointed to."""
        return f"next page {token!r}"

    def full(self, records: list, page_size: int) -> bool:
        """Without a total in the answer, a page with `page_size` records may have a
        successor; a shorter one is the last."""
        return bool(records) and len(records) >= page_size


@dataclass(frozen=True)
class CursorPaginator(Paginator):
    """The answer names the next page's cursor at `cursor_path` (present on every page, null
    on the last); the next request sends it as `cursor_param`."""

    type: ClassVar[str] = "cursor"
    cursor_path: str = "next_cursor"
    cursor_param: str = "cursor"

    def query(self, token: Token, page_size: int) -> dict[str, Any]:
        return {**super().query(token, page_size),
                **({self.cursor_param: token} if token else {})}

    def read(self, body, headers, token, page_size):
        records = records_at(body, self.data_path)
        try:
            cursor = _at(body, self.cursor_path, "the next cursor")
        except Malformed:
            raise Malformed(f"no '{self.cursor_path}' (null on the last page)") from None
        if cursor is not None and not isinstance(cursor, str):
            raise Malformed(f"'{self.cursor_path}' is {type(cursor).__name__}, not a string "
                            "or null")
        return records, cursor or None

    def describe(self, token: Token) -> str:
        text = str(token)
        return f"{self.cursor_path} {(text if len(text) <= 100 else text[:100] + '…')!r}"


@dataclass(frozen=True)
class OffsetPaginator(Paginator):
    """`offset_param` counts records from 0; the last page is short (or empty), or the offset
    reaches the total at `total_path`, if the API gives one."""

    type: ClassVar[str] = "offset"
    offset_param: str = "offset"
    total_path: str | None = None

    def query(self, token: Token, page_size: int) -> dict[str, Any]:
        return {**super().query(token, page_size), self.offset_param: int(token or 0)}

    def read(self, body, headers, token, page_size):
        records = records_at(body, self.data_path)
        offset = int(token or 0) + len(records)
        if self.total_path is not None:
            total = _at(body, self.total_path, "the total")
            if not isinstance(total, int) or isinstance(total, bool):
                raise Malformed(f"'{self.total_path}' is {type(total).__name__}, not an integer")
            return records, offset if records and offset < total else None
        return records, offset if self.full(records, page_size) else None

    def describe(self, token: Token) -> str:
        return f"{self.offset_param} {token}"


@dataclass(frozen=True)
class PageNumberPaginator(Paginator):
    """`page_param` counts pages from `base_page`; the last page is short (or empty), or the
    page reaches the page count at `total_pages_path`, if the API gives one."""

    type: ClassVar[str] = "page_number"
    page_param: str = "page"
    base_page: int = 1
    total_pages_path: str | None = None

    def query(self, token: Token, page_size: int) -> dict[str, Any]:
        number = self.base_page if token is None else int(token)
        return {**super().query(token, page_size), self.page_param: number}

    def read(self, body, headers, token, page_size):
        records = records_at(body, self.data_path)
        number = self.base_page if token is None else int(token)
        if self.total_pages_path is not None:
            pages = _at(body, self.total_pages_path, "the page count")
            if not isinstance(pages, int) or isinstance(pages, bool):
                raise Malformed(f"'{self.total_pages_path}' is {type(pages).__name__}, not an "
                                "integer")
            last = self.base_page + pages - 1
            return records, number + 1 if records and number < last else None
        return records, number + 1 if self.full(records, page_size) else None

    def describe(self, token: Token) -> str:
        return f"{self.page_param} {token}"


_LINK = re.compile(r'<([^>]*)>\s*((?:;\s*[^;,]*)*)')


def next_link(header: str | None) -> str | None:
    """The `rel="next"` target of an RFC 8288 `Link` header."""
    for target, params in _LINK.findall(header or ""):
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip('" ').lower().split():
                return target
    return None


@dataclass(frozen=True)
class LinkHeaderPaginator(Paginator):
    """The answer's `Link` header names the next page (`rel="next"`, as GitHub's API); the
    first request carries the window and the page size, the next ones are the links as given
    (they must stay on the connection's origin: the client refuses any other)."""

    type: ClassVar[str] = "link_header"
    follows_links: ClassVar[bool] = True
    data_path: str | None = None

    def read(self, body, headers, token, page_size):
        return records_at(body, self.data_path), next_link(headers.get("Link"))

    def describe(self, token: Token) -> str:
        return f"a next link to {token}"


# --- auth ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    """How requests prove who we are, from the connection's login and password."""

    type: ClassVar[str] = ""

    def headers(self, login: str | None, password: str | None) -> dict[str, str]:
        raise NotImplementedError

    def secrets(self, login: str | None, password: str | None) -> tuple[str, ...]:
        """What must never appear in a log or an error (blanked where an answer echoes it)."""
        return (password,) if password else ()


@dataclass(frozen=True)
class ApiKeyAuth(Auth):
    """The connection's password in a request header (`X-API-Key` by default)."""

    type: ClassVar[str] = "api_key"
    name: str = "X-API-Key"

    def headers(self, login, password):
        return {self.name: password} if password else {}


@dataclass(frozen=True)
class BearerAuth(Auth):
    """`Authorization: Bearer <the connection's password>`."""

    type: ClassVar[str] = "bearer"

    def headers(self, login, password):
        return {"Authorization": f"Bearer {password}"} if password else {}


@dataclass(frozen=True)
class BasicAuth(Auth):
    """HTTP basic: the connection's login and password."""

    type: ClassVar[str] = "http_basic"

    def headers(self, login, password):
        if not password:
            return {}
        token = base64.b64encode(f"{login or ''}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def secrets(self, login, password):
        if not password:
            return ()
        token = self.headers(login, password)["Authorization"].removeprefix("Basic ")
        return (password, token)


# --- the declaration -----------------------------------------------------------------------


@dataclass(frozen=True)
class RestApi:
    """A REST source's API: the window's query parameters (`[start, end)`, ISO 8601 UTC), its
    paginator and its auth. The default is the MES's: `updated_since`/`updated_before`, keyset
    pages by `next_cursor`, the key in `X-API-Key`."""

    window: tuple[str, str] = ("updated_since", "updated_before")
    paginator: Paginator = field(default_factory=CursorPaginator)
    auth: Auth = field(default_factory=ApiKeyAuth)
