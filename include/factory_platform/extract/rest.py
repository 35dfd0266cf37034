"""REST client for plant APIs: one client for every REST source, driven by what the source
declares (`Source.rest`, `rest_spec.py`): the window's query parameters, a paginator
(cursor, offset, page number, link header) and an auth (API-key header, bearer, basic), as
dlt's `rest_api`. The MES and QMS declare `updated_since`/`updated_before`, keyset pages by
`next_cursor` and `X-API-Key`.

`open_extraction` fetches every page of the window *before* the loader opens its transaction:
records are spooled to a temporary file (JSON lines; memory bounded by one page) and the
returned `Extraction.records` reads the spool. A stalled server or a cursor that never advances
therefore never holds the raw table's lock. Every record carries its page as `source`, so a
quarantined record can be traced back to the request that delivered it.

What the client refuses or retries (every error names the URL, never a credential; a body is
quoted by its first `BODY_EXCERPT_BYTES` bytes only):

* **A total deadline per request** (`Source.request_deadline`): connect, headers and the whole
  body must arrive within it. The socket timeouts are capped by what is left of it, the body is
  read in chunks against a monotonic clock, and a watchdog shuts the socket at the deadline
  (so a server dripping its headers or body a byte at a time is cut too). A request past its
  deadline is retried like a timeout; when retries run out: `SourceUnavailable`.
* 5xx answers, connection errors and timeouts are retried with exponential backoff; 429 waits
  for `Retry-After` (at most `max_wait_s`); another 4xx fails at once (`SourceUnavailable`).
* **Malformed or wrongly shaped answers** (not JSON; no records list where the paginator
  declares it, e.g. `data`; for a cursor paginator no `next_cursor`, or one that is neither a
  string nor null; a total that is not an integer) are retried like a 5xx; when retries run
  out: `MalformedAnswer` (a `RefusedAnswer`). A single record that is not an object, in an
  otherwise well-formed page, is quarantined on its own (`{"_unparseable": …}`).
* **Pagination**: at most `Source.max_pages` pages per window (`TooManyPages`); a next page
  (cursor, offset, page number or link) already asked for in this window, or a page that
  repeats the records of the one before (an API that ignores its paging parameter), is
  refused (`CursorStuck`); a next link to another origin is refused (`RedirectRefused`).
* **Credentials never leave the connection's origin**: requests never follow redirects; a
  redirect to the same origin (scheme, host, port) is followed here, one to any other origin
  fails with `RedirectRefused`, naming the Location's host, and nothing is sent there.
* An empty answer is handed to the loader with `empty_is_deletion=source.empty_window_deletes`:
  for a window where raw holds rows the loader refuses it (`EmptyAnswerRefused`) unless the
  source declares that its windows are complete snapshots.

Client settings beyond the source's limits come from the Airflow connection's extras (all
optional): `scheme`, `timeout_s` (connect and per-read socket timeout), `max_retries`,
`backoff_s`, `max_wait_s`, `max_body_bytes`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from factory_platform.extract.incidents import RefusedAnswer
from factory_platform.extract.load import Extraction, SourceRecord
from factory_platform.rest_spec import CursorPaginator, Malformed, RestApi

log = logging.getLogger(__name__)

CURSOR_PAGINATORS = (CursorPaginator,)  # a new cursor each page: repeated records are the API's
BODY_EXCERPT_BYTES = 200
READ_CHUNK_BYTES = 64 * 1024
SPOOL_MEMORY_BYTES = 1 << 20  # the spool moves to disk beyond this


class SourceUnavailable(RuntimeError):
    """The API kept failing after every retry (or answered an error that is not retried)."""


class RedirectRefused(SourceUnavailable):
    """The API redirected to another origin: not followed, so no credential goes there."""


class MalformedAnswer(RefusedAnswer):
    """The API kept answering something that is not a well-formed page (after every retry)."""


class CursorStuck(RefusedAnswer):
    """The API pointed to a page already asked for in this window (a `next_cursor` seen
    before, say), or repeated the page before: paging would not end."""


class TooManyPages(RefusedAnswer):
    """The window took more than the source's `max_pages` pages."""


@dataclass(frozen=True)
class RestEndpoint:
    base_url: str
    password: str | None = None  # the connection's secret: API key, token or basic password
    login: str | None = None
    api: RestApi = field(default_factory=RestApi)  # window parameters, paginator, auth (the source's declaration)
    timeout_s: float = 30.0  # connect and per-read socket timeout (capped by the deadline)
    max_retries: int = 5
    backoff_s: float = 0.5
    max_wait_s: float = 60.0
    deadline_s: float = 120.0  # total per request: connect + headers + whole body
    max_pages: int = 10_000
    max_body_bytes: int = 256 << 20
    max_redirects: int = 5  # same-origin redirects followed per request

    @property
    def public_url(self) -> str:
        """`base_url` without any user or password in it."""
        return _public(self.base_url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What no log line or error may contain."""
        return self.api.auth.secrets(self.login, self.password)

    def auth_headers(self) -> dict[str, str]:
        return self.api.auth.headers(self.login, self.password)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- one window: every page, spooled ------------------------------------------------------------


class Spool:
    """The records of one window as fetched, in a temporary file (JSON lines): `records()`
    reads them back once (and closes the file)."""

    def __init__(self) -> None:
        # closed when read back, or by fetch_window on a failure
        self._file = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_MEMORY_BYTES, mode="w+b")
        self.count = 0
        self.pages = 0

    def add(self, source: str, record_ref: str, payload: dict) -> None:
        # ASCII JSON: any string the page held (even a lone surrogate) reads back the same
        self._file.write(json.dumps([source, record_ref, payload]).encode("ascii") + b"\n")
        self.count += 1

    def records(self) -> Iterator[SourceRecord]:
        try:
            self._file.seek(0)
            for line in self._file:
                source, record_ref, payload = json.loads(line)
                yield SourceRecord(source=source, record_ref=record_ref, payload=payload)
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()


def fetch_window(
    endpoint: RestEndpoint, path: str, since: datetime, before: datetime, id_field: str,
    page_size: int = 500, session=None,
) -> Spool:
    """Fetch every record with `since <= updated_at < before` into a `Spool`, page by page."""
    spool = Spool()
    try:
        for source, records in _pages(endpoint, path, since, before, page_size, session):
            spool.pages += 1
            for index, record in enumerate(records):
                if isinstance(record, dict):
                    key = record.get(id_field)
                    ref = str(key) if key not in (None, "") else f"#{index}"
                else:  # quarantined on its own: the page around it is well formed
                    ref, record = f"#{index}", {"_unparseable": record}
                spool.add(source, ref, record)
    except BaseException:
        spool.close()
        raise
    return spool


def _pages(endpoint, path, since, before, page_size, session) -> Iterator[tuple[str, list]]:
    """(page label, records) per page, refusing a cursor seen before and pages over the cap."""
    http = session or _session()
    try:
        yield from _paging(http, endpoint, path, since, before, page_size)
    finally:
        if session is None:
            http.close()


def _paging(http, endpoint, path, since, before, page_size) -> Iterator[tuple[str, list]]:
    """The declared paginator walks the window: the first request carries the window's
    parameters, each answer names the next page (cursor, offset, page number or link)."""
    paginator = endpoint.api.paginator
    since_param, before_param = endpoint.api.window
    window = {since_param: _iso(since), before_param: _iso(before)}
    base = f"{endpoint.base_url.rstrip('/')}{path}"
    token = None
    seen: set = set()
    previous_digest = None
    page = 0
    while True:
        if paginator.follows_links and token is not None:
            url = urljoin(base, str(token))
            if _origin(url) != _origin(base):
                parts = urlsplit(url)
                raise RedirectRefused(
                    f"GET {_public(base)} page {page} links its next page to host "
                    f"{parts.hostname}:{parts.port or _default_port(parts.scheme)} "
                    f"({parts.scheme}); not followed: credentials are only sent to "
                    f"{_public(endpoint.base_url)}")
        else:
            url = f"{base}?{urlencode({**window, **paginator.query(token, page_size)})}"

        def read(body, headers, token=token):
            return paginator.read(body, headers, token, page_size)

        records, next_token = _get_page(http, endpoint, url, read)
        page += 1
        if not isinstance(paginator, CURSOR_PAGINATORS) and records:
            digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).digest()
            if digest == previous_digest:
                raise CursorStuck(
                    f"GET {_public(url)} answered the same records as page {page - 1}: the "
                    f"API ignores its paging ({paginator.type}); the window is refused, "
                    "nothing is loaded")
            previous_digest = digest
        yield f"{path} page {page} ({since_param}={window[since_param]})", records
        if next_token is None:
            return
        if next_token in seen or next_token == token:
            raise CursorStuck(
                f"GET {_public(url)} answered {paginator.describe(next_token)}, which this "
                f"window already had (page {page}): the paging does not advance; the window "
                "is refused, nothing is loaded")
        if page >= endpoint.max_pages:
            raise TooManyPages(
                f"GET {_public(url)}: the window is past its cap of {endpoint.max_pages} pages "
                f"(page {page} still has a next page); the window is refused, nothing is "
                "loaded")
        seen.add(next_token)
        token = next_token


# --- one page: retries, deadline, shape -----------------------------------------------------------


def _get_page(http, endpoint: RestEndpoint, url: str, read=None) -> tuple[list, object]:
    """The page's records and the next page's token (`read(json, headers)`, by default the
    MES's `data` and `next_cursor`), after retries; raises SourceUnavailable, RedirectRefused
    or MalformedAnswer."""
    import requests
    import urllib3

    last_problem, malformed = "", False
    for attempt in range(endpoint.max_retries + 1):
        backoff = endpoint.backoff_s * 2**attempt
        malformed = False
        try:
            status, headers, body = _attempt(http, endpoint, url)
        except _DeadlinePassed:
            last_problem = (f"no complete answer within the request deadline of "
                            f"{endpoint.deadline_s:g} s")
            wait = backoff
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            last_problem = f"{type(exc).__name__}: {_scrub(str(exc), endpoint)}"
            wait = backoff
        else:
            if status == 200:
                try:
                    return _read_page(body, headers, read)
                except Malformed as exc:
                    malformed = True
                    last_problem = f"a malformed answer ({exc}); body starts {_excerpt(body, endpoint)}"
                    wait = backoff
            else:
                last_problem = f"HTTP {status}: {_excerpt(body, endpoint)}"
                if status == 429:
                    wait = _retry_after(headers.get("Retry-After"), endpoint, attempt)
                elif status >= 500:
                    wait = backoff
                else:
                    raise SourceUnavailable(f"GET {_public(url)} answered {last_problem}")
        if attempt == endpoint.max_retries:
            break
        wait = min(wait, endpoint.max_wait_s)
        log.warning("GET %s: %s — retry %d/%d in %.2f s", _public(url), last_problem,
                    attempt + 1, endpoint.max_retries, wait)
        time.sleep(wait)
    message = (f"GET {_public(url)} failed after {endpoint.max_retries + 1} attempts; "
               f"last answer {last_problem}")
    raise (MalformedAnswer if malformed else SourceUnavailable)(message)


def _read_page(body: bytes, headers: Mapping[str, str], read=None) -> tuple[list, object]:
    try:
        page = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise Malformed(f"not JSON: {str(exc).splitlines()[0][:100]}") from None
    if read is None:
        return CursorPaginator().read(page, headers, None, 0)
    return read(page, headers)


class _DeadlinePassed(Exception):
    pass


def _attempt(http, endpoint: RestEndpoint, url: str) -> tuple[int, Mapping[str, str], bytes]:
    """One request (following same-origin redirects) within the deadline: status, headers,
    body. Raises _DeadlinePassed, RedirectRefused or the transport's error."""
    deadline = time.monotonic() + endpoint.deadline_s
    origin = _origin(url)
    headers = {"Accept": "application/json", **endpoint.auth_headers()}
    watch = _Watch(deadline)
    _in_flight.watch = watch
    watch.start()
    try:
        for _ in range(endpoint.max_redirects + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _DeadlinePassed
            socket_timeout = max(0.001, min(endpoint.timeout_s, remaining))
            try:
                response = http.get(url, headers=headers, stream=True, allow_redirects=False,
                                    timeout=(socket_timeout, socket_timeout))
                try:
                    body = _read_body(response, endpoint, url, deadline)
                finally:
                    response.close()
            except Exception:
                if watch.fired or time.monotonic() >= deadline:
                    raise _DeadlinePassed from None
                raise
            if response.status_code not in (301, 302, 303, 307, 308):
                return response.status_code, response.headers, body
            location = response.headers.get("Location")
            if not location:
                return response.status_code, response.headers, body
            target = urljoin(url, location)
            if _origin(target) != origin:
                parts = urlsplit(target)
                raise RedirectRefused(
                    f"GET {_public(url)} answered HTTP {response.status_code} redirecting to "
                    f"host {parts.hostname}:{parts.port or _default_port(parts.scheme)} "
                    f"({parts.scheme}); not followed: credentials are only sent to "
                    f"{origin[0]}://{origin[1]}:{origin[2]}")
            log.info("GET %s: HTTP %d to %s (same origin, followed)", _public(url),
                     response.status_code, _public(target))
            url = target
        raise SourceUnavailable(
            f"GET {_public(url)}: more than {endpoint.max_redirects} redirects")
    finally:
        watch.stop()
        _in_flight.watch = None


def _read_body(response, endpoint: RestEndpoint, url: str, deadline: float) -> bytes:
    """The whole body, read in chunks against the deadline (the watchdog cuts a chunk that
    never completes)."""
    chunks, size = [], 0
    for chunk in response.raw.stream(READ_CHUNK_BYTES, decode_content=True):
        size += len(chunk)
        if size > endpoint.max_body_bytes:
            raise SourceUnavailable(
                f"GET {_public(url)} answered more than {endpoint.max_body_bytes} bytes "
                "(the connection's max_body_bytes); not retried")
        chunks.append(chunk)
        if time.monotonic() >= deadline:
            raise _DeadlinePassed
    return b"".join(chunks)


def _retry_after(header: str | None, endpoint: RestEndpoint, attempt: int) -> float:
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    return endpoint.backoff_s * 2**attempt


# --- the deadline watchdog --------------------------------------------------------------------


_in_flight = threading.local()  # .watch: the _Watch of this thread's request in flight


class _Watch:
    """Shuts the socket of this thread's request once its deadline has passed, so a blocking
    read (headers or body dripping in) ends instead of waiting for the next byte."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection = None  # set by the connection classes below when they are used
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rest-deadline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()

    def _run(self) -> None:
        if self._done.wait(max(0.0, self.deadline - time.monotonic())):
            return
        self.fired = True
        while not self._done.is_set():  # until the request gives up (a connect may be under way)
            sock = getattr(self.connection, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._done.wait(0.02)


def _session():
    """A requests session whose connections report to this thread's deadline watchdog."""
    import requests

    http = requests.Session()
    adapter = _watched_adapter()
    http.mount("http://", adapter())
    http.mount("https://", adapter())
    return http


@functools.cache
def _watched_adapter():
    """An HTTPAdapter whose connections tell this thread's `_Watch` which socket to cut."""
    from requests.adapters import HTTPAdapter
    from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.connection import HTTPConnection, HTTPSConnection

    def watched(cls):
        class Watched(cls):
            def connect(self):
                _report(self)
                return super().connect()

            def request(self, *args, **kwargs):
                _report(self)
                return super().request(*args, **kwargs)

        Watched.__name__ = Watched.__qualname__ = cls.__name__  # error messages read as usual
        return Watched

    def pool(cls, connection_cls):
        return type(cls.__name__, (cls,), {"ConnectionCls": watched(connection_cls)})

    http_pool = pool(HTTPConnectionPool, HTTPConnection)
    https_pool = pool(HTTPSConnectionPool, HTTPSConnection)

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}

    return Adapter


def _report(connection) -> None:
    watch = getattr(_in_flight, "watch", None)
    if watch is not None:
        watch.connection = connection


# --- what an error may say ----------------------------------------------------------------------


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return (parts.scheme.lower(), (parts.hostname or "").lower(),
            parts.port or _default_port(parts.scheme.lower()))


def _public(url: str) -> str:
    """The URL without user or password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _scrub(text: str, endpoint: RestEndpoint) -> str:
    for secret in endpoint.secrets:
        text = text.replace(secret, "***")
    return text


def _excerpt(body: bytes, endpoint: RestEndpoint) -> str:
    """The first bytes of a body, printable, with the credential blanked if it was echoed
    (blanked before the cut, so no part of it survives at the edge)."""
    head = body[:BODY_EXCERPT_BYTES + max((len(s) for s in endpoint.secrets), default=0)]
    text = _scrub(head.decode("utf-8", "replace"), endpoint)[:BODY_EXCERPT_BYTES]
    more = f" … ({len(body)} bytes)" if len(body) > BODY_EXCERPT_BYTES else ""
    return repr(text) + more


# --- the client entry point ---------------------------------------------------------------------


def endpoint_for(source) -> RestEndpoint:
    """The source's API as its Airflow connection and limits describe it."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(source.conn_id)
    extra = conn.extra_dejson
    scheme = extra.get("scheme", "http")
    port = f":{conn.port}" if conn.port else ""
    settings = {name: kind(extra[name]) for name, kind in (
        ("timeout_s", float), ("max_retries", int), ("backoff_s", float), ("max_wait_s", float),
        ("max_body_bytes", int)) if extra.get(name) is not None}
    return RestEndpoint(
        base_url=f"{scheme}://{conn.host}{port}", password=conn.password or None,
        login=conn.login or None, api=source.rest,
        deadline_s=source.request_deadline.total_seconds(), max_pages=source.max_pages,
        **settings)


def open_extraction(source, entity, window) -> Extraction:
    """Client entry point (see `extract.clients`): the entity's records updated in the window,
    every page fetched before this returns (the loader's transaction never waits on the API)."""
    endpoint = endpoint_for(source)
    spool = fetch_window(endpoint, entity.endpoint, window.start, window.end,
                         id_field=entity.natural_key[0], page_size=source.page_size)
    log.info("%s%s: %d records in %d pages spooled for [%s, %s)", endpoint.public_url,
             entity.endpoint, spool.count, spool.pages, _iso(window.start), _iso(window.end))
    return Extraction(records=spool.records(),
                      source_label=f"{endpoint.public_url}{entity.endpoint}",
                      empty_is_deletion=source.empty_window_deletes)
