"""Issue #11 item 4 (REST) and #12 (credentials on redirect): the REST client against a real
HTTP server that misbehaves on purpose (`_http_faults.FaultServer`, 127.0.0.1, a thread).

Each fault is counted: requests the server saw, records it emitted = raw rows + quarantined
rows once the fault clears, time until a dripping answer is cut. The source is private
(`faultrest`, its own raw schema), reached through an Airflow connection in the environment,
and loaded through the real client (`rest.open_extraction`) and loader (`load_batch`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from factory_platform.extract import load, rest
from factory_platform.extract.clients import Window
from factory_platform.extract.incidents import RefusedAnswer
from factory_platform.fields import Field
from factory_platform.sources import Entity, Source

from ._http_faults import FaultServer, Reply, page, paged

SYSTEM = "faultrest"
TABLE = f"raw_{SYSTEM}.readings"
API_KEY = "k3y-never-elsewhere-0451"
T0 = datetime(2026, 10, 20, tzinfo=UTC)
WINDOW = Window(start=T0, end=T0 + timedelta(hours=1), interval_start=T0,
                interval_end=T0 + timedelta(hours=1))

# Small limits so every fault ends in about a second.
DEADLINE_S = 0.5
RETRIES = 2
BACKOFF_S = 0.02
SOCKET_TIMEOUT_S = 0.3  # per read: a drip every 0.05 s never trips it, only the deadline

ENTITY = Entity(
    name="readings", endpoint="/api/v1/readings", natural_key=("reading_id",),
    cursor="updated_at",
    fields=(Field("reading_id", required=True), Field("qty", "int", required=True, minimum=0),
            Field("updated_at", "timestamptz", required=True)),
)
SOURCE = Source(
    system=SYSTEM, title="REST fault tests", interface="rest", conn_id="faultrest_api",
    schedule_cron="*/15 * * * *", lookback=timedelta(0), entities=(ENTITY,),
    max_reject_share=0.5, page_size=3,
    request_deadline=timedelta(seconds=DEADLINE_S), max_pages=20,
)
TARGET = load.LoadTarget(
    system=SYSTEM, entity=ENTITY.name, fields=ENTITY.fields, natural_key=ENTITY.natural_key,
    replace_column=ENTITY.cursor, max_reject_share=SOURCE.max_reject_share,
)


def reading(i: int) -> dict:
    return {"reading_id": f"R{i}", "qty": i,
            "updated_at": (T0 + timedelta(minutes=5 * i)).isoformat().replace("+00:00", "Z")}


READINGS = [reading(i) for i in range(1, 8)]  # 7 records: 3 pages of 3


@pytest.fixture()
def dsn(warehouse_dsn):
    from factory_platform.warehouse import ensure_warehouse

    ensure_warehouse(warehouse_dsn)

    def clean():
        with psycopg.connect(warehouse_dsn) as conn:
            conn.execute(f"drop schema if exists raw_{SYSTEM} cascade")
            for table in ("ops.quarantine", "ops.load_audit", "ops.schema_drift",
                          "ops.source_incident", "ops.extract_watermark"):
                if conn.execute("select to_regclass(%s)", (table,)).fetchone()[0]:
                    conn.execute(f"delete from {table} where system = %s", (SYSTEM,))

    clean()
    yield warehouse_dsn
    clean()


def connect_to(monkeypatch, server: FaultServer, **extra) -> None:
    """Point the source's Airflow connection at `server` (with small retry settings)."""
    settings = {"timeout_s": SOCKET_TIMEOUT_S, "max_retries": RETRIES, "backoff_s": BACKOFF_S}
    monkeypatch.setenv("AIRFLOW_CONN_FAULTREST_API", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": server.port, "login": "mes",
        "password": API_KEY, "extra": {**settings, **extra}}))


def extract(dsn: str, source: Source = SOURCE, window: Window = WINDOW) -> load.LoadResult:
    """The extraction task's two steps: fetch the window (client), then load it."""
    extraction = rest.open_extraction(source, ENTITY, window)
    return load.load_batch(dsn, TARGET, extraction, interval_start=window.interval_start,
                             interval_end=window.interval_end, window_start=window.start)


def raw_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        if not conn.execute("select to_regclass(%s)", (TABLE,)).fetchone()[0]:
            return []
        return conn.execute(
            f"select reading_id, qty, updated_at from {TABLE} order by 1").fetchall()


def quarantined(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select count(*) from ops.quarantine where system = %s",
                            (SYSTEM,)).fetchone()[0]


def audit_status(dsn: str, window: Window = WINDOW) -> str | None:
    batch_id = load.batch_id_for(SYSTEM, ENTITY.name, window.start, window.interval_end)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select status from ops.load_audit where batch_id = %s",
                           (batch_id,)).fetchone()
    return row[0] if row else None


def page_url(server: FaultServer) -> str:
    return f"{server.url}{ENTITY.endpoint}?updated_since="


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text


# --- 1. a total deadline per request ------------------------------------------------------------


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body", "headers"])
def test_a_dripping_answer_is_cut_at_the_deadline_then_fails_naming_the_url(
        monkeypatch, drip_headers):
    """A byte every 0.05 s (each read well within the socket timeout) is cut at the 0.5 s
    deadline, attempt after attempt: 3 attempts, about 3 × 0.5 s, then SourceUnavailable."""
    body = json.dumps({"data": READINGS, "next_cursor": None}).encode()
    drip = Reply(body=body, drip_s=0.05, drip_headers=drip_headers)
    with FaultServer(lambda request, n: drip) as server:
        connect_to(monkeypatch, server)
        started = time.monotonic()
        with pytest.raises(rest.SourceUnavailable) as failure:
            rest.open_extraction(SOURCE, ENTITY, WINDOW)
        elapsed = time.monotonic() - started
    attempts = RETRIES + 1
    assert server.count == attempts
    backoff = sum(BACKOFF_S * 2**i for i in range(RETRIES))
    assert DEADLINE_S * attempts <= elapsed < DEADLINE_S * attempts + backoff + 0.5
    message = str(failure.value)
    assert page_url(server) in message
    assert f"failed after {attempts} attempts" in message
    assert f"deadline of {DEADLINE_S:g} s" in message
    assert_no_key(message)


def test_a_drip_that_clears_is_retried_and_every_record_lands(dsn, monkeypatch):
    feed = paged(READINGS, 3)

    def answer(request, n):
        if n == 2:  # page 2's first attempt drips
            return dataclasses.replace(feed(request), drip_s=0.05)
        return feed(request)

    with FaultServer(answer) as server:
        connect_to(monkeypatch, server)
        result = extract(dsn)
    assert server.count == 3 + 1  # three pages, one of them twice
    assert result.rows_read == len(READINGS) == len(raw_rows(dsn)) + quarantined(dsn)
    assert audit_status(dsn) == "loaded"


# --- 2. page cap and a cursor that must advance ------------------------------------------------


def test_a_cursor_that_does_not_advance_is_refused_without_holding_the_lock(dsn, monkeypatch):
    """Page 2 answers the cursor it was asked with: refused after exactly two requests. While
    the client pages, another session takes the raw table's load lock and writes a row: the
    fetching happens before the loader's transaction, so nothing of the raw table is held."""
    with psycopg.connect(dsn) as conn:
        load.ensure_raw_table(conn, TARGET)
    probe: dict[str, object] = {}

    def take_the_lock():
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("set lock_timeout = '1s'")
            probe["locked"] = conn.execute(
                "select pg_try_advisory_xact_lock(hashtext(%s))", (TABLE,)).fetchone()[0]
            conn.execute(f"insert into {TABLE} (reading_id, qty, updated_at, _batch_id, "
                         "_extracted_at, _source, _interval_start, _interval_end) "
                         "values ('OTHER', 1, %s, 'other', now(), 'other', %s, %s)",
                         (T0, T0, T0))

    def answer(request, n):
        if n == 2:
            worker = threading.Thread(target=take_the_lock)
            worker.start()
            worker.join(10)
            return page(READINGS[3:6], "C1")  # the cursor page 2 was asked with
        return page(READINGS[:3], "C1")

    patient = dataclasses.replace(SOURCE, request_deadline=timedelta(seconds=10))
    with FaultServer(answer) as server:
        connect_to(monkeypatch, server, timeout_s=10)
        with pytest.raises(rest.CursorStuck) as failure:
            extract(dsn, patient)
    assert isinstance(failure.value, RefusedAnswer)
    assert server.count == 2
    assert [r.query.get("cursor") for r in server.requests] == [None, "C1"]
    assert probe["locked"] is True
    assert [r[0] for r in raw_rows(dsn)] == ["OTHER"]  # nothing of the refused window
    assert audit_status(dsn) is None
    message = str(failure.value)
    assert f"{page_url(server)}" in message and "cursor=C1" in message
    assert "next_cursor 'C1'" in message
    assert_no_key(message)


def test_a_cursor_seen_two_pages_ago_is_refused(monkeypatch):
    cursors = {1: "A", 2: "B", 3: "A"}
    with FaultServer(lambda request, n: page([reading(n)], cursors.get(n))) as server:
        connect_to(monkeypatch, server)
        with pytest.raises(rest.CursorStuck, match="next_cursor 'A'"):
            rest.open_extraction(SOURCE, ENTITY, WINDOW)
    assert server.count == 3


def test_more_pages_than_the_cap_are_refused(monkeypatch):
    endless = [reading(i) for i in range(1, 200)]
    capped = dataclasses.replace(SOURCE, max_pages=4)
    with FaultServer(lambda request, n: paged(endless, 3)(request)) as server:
        connect_to(monkeypatch, server)
        with pytest.raises(rest.TooManyPages) as failure:
            rest.open_extraction(capped, ENTITY, WINDOW)
    assert isinstance(failure.value, RefusedAnswer)
    assert server.count == 4
    assert "cap of 4 pages" in str(failure.value) and page_url(server) in str(failure.value)


# --- 3. malformed and wrongly shaped answers -----------------------------------------------------

MALFORMED = {
    "not_json": b"<html><body>502 Bad Gateway</body></html>",
    "cut_off": b'{"data": [{"reading_id": "R4", "qty": 4, "upd',
    "empty_body": b"",
    "json_array": b'[{"reading_id": "R4"}]',
    "no_data": b'{"items": [], "next_cursor": null}',
    "data_not_a_list": b'{"data": {"reading_id": "R4"}, "next_cursor": null}',
    "cursor_a_number": b'{"data": [], "next_cursor": 7}',
    "no_next_cursor": b'{"data": []}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_page_is_retried_and_every_record_lands(dsn, monkeypatch, body):
    """Page 2 answers malformed twice, then well: 3 pages + 2 retries, every record lands."""
    feed = paged(READINGS, 3)
    with FaultServer(lambda request, n: Reply(body=body) if n in (2, 3) else feed(request)
                     ) as server:
        connect_to(monkeypatch, server)
        result = extract(dsn)
    assert server.count == 3 + 2
    assert server.requests[1].query == server.requests[2].query == server.requests[3].query
    assert result.rows_read == len(READINGS) == len(raw_rows(dsn)) + quarantined(dsn)
    assert quarantined(dsn) == 0


def test_a_malformed_answer_that_persists_is_refused_naming_the_url_and_first_bytes(
        monkeypatch, caplog):
    """N retries (N+1 requests), then MalformedAnswer: the URL, the first 200 bytes of the body
    and no more, and never the key — even when the body echoes it."""
    body = (b"<html>proxy error; your key was " + API_KEY.encode() + b" "
            + b"x" * 1000 + b"TAIL-MARKER</html>")
    caplog.set_level(logging.INFO, logger="factory_platform.extract.rest")
    with FaultServer(lambda request, n: Reply(body=body)) as server:
        connect_to(monkeypatch, server)
        with pytest.raises(rest.MalformedAnswer) as failure:
            rest.open_extraction(SOURCE, ENTITY, WINDOW)
    assert isinstance(failure.value, RefusedAnswer)
    assert server.count == RETRIES + 1
    message = str(failure.value)
    assert page_url(server) in message and f"after {RETRIES + 1} attempts" in message
    assert "not JSON" in message and "<html>proxy error; your key was ***" in message
    assert "TAIL-MARKER" not in message and f"({len(body)} bytes)" in message
    assert len(message) < 800
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == RETRIES
    assert_no_key(message, *(r.getMessage() for r in caplog.records))


def test_a_record_that_is_not_an_object_is_quarantined_alone(dsn, monkeypatch):
    records = [reading(1), 42, reading(2), "R?", reading(3), None]
    with FaultServer(lambda request, n: page(records)) as server:
        connect_to(monkeypatch, server)
        result = extract(dsn)
    assert server.count == 1
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (6, 3, 3)
    assert len(records) == len(raw_rows(dsn)) + quarantined(dsn)
    with psycopg.connect(dsn) as conn:
        kept = conn.execute("select record_ref, raw_payload from ops.quarantine "
                            "where system = %s order by 1", (SYSTEM,)).fetchall()
    assert kept == [("#1", '{"_unparseable": 42}'), ("#3", '{"_unparseable": "R?"}'),
                    ("#5", '{"_unparseable": null}')]


# --- 5. an empty answer where rows were ---------------------------------------------------------

LATE_HALF = Window(start=T0 + timedelta(minutes=15), end=T0 + timedelta(hours=1),
                   interval_start=T0 + timedelta(minutes=15),
                   interval_end=T0 + timedelta(hours=1))


def test_an_empty_answer_for_a_window_with_rows_is_refused_and_changes_nothing(
        dsn, monkeypatch):
    with FaultServer(lambda request, n: paged(READINGS, 3)(request)) as server:
        connect_to(monkeypatch, server)
        extract(dsn)
    before = raw_rows(dsn)
    assert len(before) == len(READINGS)
    with FaultServer(lambda request, n: page([])) as server:
        connect_to(monkeypatch, server)
        with pytest.raises(load.EmptyAnswerRefused) as failure:
            extract(dsn, window=LATE_HALF)
    assert isinstance(failure.value, RefusedAnswer)
    assert server.count == 1
    assert raw_rows(dsn) == before
    assert audit_status(dsn, LATE_HALF) != "loaded"
    assert audit_status(dsn) == "loaded"  # the first batch's audit is untouched


def test_an_empty_answer_deletes_only_where_the_source_declares_it(dsn, monkeypatch):
    snapshots = dataclasses.replace(SOURCE, empty_window_deletes=True)
    with FaultServer(lambda request, n: paged(READINGS, 3)(request)) as server:
        connect_to(monkeypatch, server)
        extract(dsn, snapshots)
    with FaultServer(lambda request, n: page([])) as server:
        connect_to(monkeypatch, server)
        result = extract(dsn, snapshots, window=LATE_HALF)
    kept = [r for r in READINGS if datetime.fromisoformat(r["updated_at"]) < LATE_HALF.start]
    assert [r[0] for r in raw_rows(dsn)] == sorted(r["reading_id"] for r in kept)
    assert result.rows_replaced == len(READINGS) - len(kept) > 0
    assert audit_status(dsn, LATE_HALF) == "loaded"


def test_an_empty_answer_for_an_empty_window_loads(dsn, monkeypatch):
    with FaultServer(lambda request, n: page([])) as server:
        connect_to(monkeypatch, server)
        result = extract(dsn)
    assert (result.rows_read, result.rows_loaded) == (0, 0)
    assert audit_status(dsn) == "loaded"


# --- 6. credentials never go to another host --------------------------------------------------


def test_a_redirect_to_another_host_is_refused_and_the_key_never_arrives_there(monkeypatch):
    with FaultServer(lambda request, n: page(READINGS)) as elsewhere:
        def redirect(request, n):
            return Reply(status=302, headers={
                "Location": f"{elsewhere.url}{request.path}?steal=1"})

        with FaultServer(redirect) as api:
            connect_to(monkeypatch, api)
            with pytest.raises(rest.RedirectRefused) as failure:
                rest.open_extraction(SOURCE, ENTITY, WINDOW)
    assert isinstance(failure.value, rest.SourceUnavailable)
    assert api.count == 1  # not retried
    assert api.requests[0].headers.get("X-API-Key") == API_KEY
    assert elsewhere.count == 0
    assert not any(API_KEY in str(r.headers.values()) for r in elsewhere.requests)
    message = str(failure.value)
    assert page_url(api) in message and f"host 127.0.0.1:{elsewhere.port}" in message
    assert "steal" not in message
    assert_no_key(message)


def test_a_redirect_within_the_same_origin_is_followed(dsn, monkeypatch):
    feed = paged(READINGS, 3)

    def answer(request, n):
        if request.path == ENTITY.endpoint:  # moved: every page redirects to /v2
            query = "&".join(f"{k}={v}" for k, v in request.query.items())
            return Reply(status=307, headers={"Location": f"/api/v2/readings?{query}"})
        return feed(request)

    with FaultServer(answer) as server:
        connect_to(monkeypatch, server)
        result = extract(dsn)
    assert server.count == 2 * 3  # each of the 3 pages: the redirect, then the page
    assert all(r.headers.get("X-API-Key") == API_KEY for r in server.requests)
    assert result.rows_loaded == len(READINGS) == len(raw_rows(dsn))
