"""One REST client, many APIs (issue #14 item 1): the paginator and auth a source declares
(`rest_spec.py`) drive the client against a real HTTP server (`FaultServer`, a thread):
every record of the window arrives once whatever the paging style, each request carries the
declared credential, and what would page for ever or leak the credential is refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from factory_platform.extract import rest
from factory_platform.rest_spec import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    CursorPaginator,
    LinkHeaderPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    RestApi,
    next_link,
)
from faults._http_faults import FaultServer, Reply

T0 = datetime(2026, 10, 20, tzinfo=UTC)
SECRET = "s3cret-never-elsewhere-9917"
RECORDS = [{"id": f"R{i}", "qty": i} for i in range(1, 8)]  # 7 records: pages of 3, 3, 1


def endpoint(server: FaultServer, api: RestApi, **limits) -> rest.RestEndpoint:
    return rest.RestEndpoint(base_url=server.url, password=SECRET, login="platform", api=api,
                             max_retries=1, backoff_s=0.01, timeout_s=2, deadline_s=5, **limits)


def fetch(server: FaultServer, api: RestApi, page_size: int = 3, **limits) -> list[dict]:
    spool = rest.fetch_window(endpoint(server, api, **limits), "/v1/items", T0,
                              T0 + timedelta(hours=1), id_field="id", page_size=page_size)
    return [record.payload for record in spool.records()]


def json_reply(body, headers: dict | None = None) -> Reply:
    return Reply(body=json.dumps(body).encode(), headers=headers or {})


def test_offset_pages_with_basic_auth():
    def answer(request, n):
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        return json_reply({"items": RECORDS[offset:offset + limit]})

    api = RestApi(window=("from", "to"), paginator=OffsetPaginator(data_path="items"),
                  auth=BasicAuth())
    with FaultServer(answer) as server:
        assert fetch(server, api) == RECORDS
    assert [r.query["offset"] for r in server.requests] == ["0", "3", "6"]
    assert {(r.query["from"], r.query["to"]) for r in server.requests} == {
        ("2026-10-20T00:00:00Z", "2026-10-20T01:00:00Z")}
    basic = base64.b64encode(f"platform:{SECRET}".encode()).decode()
    assert {r.headers["Authorization"] for r in server.requests} == {f"Basic {basic}"}


def test_offset_pages_stop_at_the_declared_total():
    """A full last page: the total says it is the last (no empty request after it)."""
    def answer(request, n):
        offset = int(request.query["offset"])
        return json_reply({"data": RECORDS[:6][offset:offset + 3], "meta": {"total": 6}})

    api = RestApi(paginator=OffsetPaginator(total_path="meta.total"), auth=BearerAuth())
    with FaultServer(answer) as server:
        assert fetch(server, api) == RECORDS[:6]
    assert server.count == 2
    assert {r.headers["Authorization"] for r in server.requests} == {f"Bearer {SECRET}"}


def test_page_numbers_until_a_short_page():
    def answer(request, n):
        page, size = int(request.query["p"]), int(request.query["size"])
        return json_reply({"data": RECORDS[page * size:(page + 1) * size]})

    api = RestApi(paginator=PageNumberPaginator(page_param="p", base_page=0, limit_param="size"),
                  auth=ApiKeyAuth(name="X-Token"))
    with FaultServer(answer) as server:
        assert fetch(server, api) == RECORDS
    assert [r.query["p"] for r in server.requests] == ["0", "1", "2"]
    assert {r.headers["X-Token"] for r in server.requests} == {SECRET}


def test_link_header_pages_follow_the_next_link():
    def answer(request, n):
        start = int(request.query.get("after", "0"))
        page = RECORDS[start:start + 3]
        more = start + 3 < len(RECORDS)
        link = (f'<{server.url}/v1/items?after={start + 3}&per_page=3>; rel="next", '
                f'<{server.url}/v1/items?after=0>; rel="first"') if more else \
            f'<{server.url}/v1/items?after=0>; rel="first"'
        return json_reply(page, {"Link": link})

    api = RestApi(paginator=LinkHeaderPaginator(limit_param="per_page"), auth=BearerAuth())
    with FaultServer(answer) as server:
        assert fetch(server, api) == RECORDS
    assert [r.query.get("after") for r in server.requests] == [None, "3", "6"]
    assert "updated_since" not in server.requests[1].query  # the link as given
    assert server.requests[0].query["updated_since"] == "2026-10-20T00:00:00Z"


def test_a_next_link_to_another_host_is_refused_and_the_credential_never_goes_there():
    with FaultServer(lambda request, n: json_reply([])) as elsewhere:
        link = f'<http://localhost:{elsewhere.port}/v1/items?after=3>; rel="next"'
        with FaultServer(lambda request, n: json_reply(RECORDS[:3], {"Link": link})) as server:
            api = RestApi(paginator=LinkHeaderPaginator(), auth=BearerAuth())
            with pytest.raises(rest.RedirectRefused) as failure:
                fetch(server, api)
    assert elsewhere.count == 0 and server.count == 1
    assert f"host localhost:{elsewhere.port}" in str(failure.value)
    assert SECRET not in str(failure.value)


def test_an_api_that_ignores_its_page_parameter_is_refused():
    """Page 2 answers page 1's records again: refused after two requests, not at max_pages."""
    api = RestApi(paginator=PageNumberPaginator(), auth=BearerAuth())
    with (FaultServer(lambda request, n: json_reply({"data": RECORDS[:3]})) as server,
          pytest.raises(rest.CursorStuck, match="same records as page 1")):
        fetch(server, api, max_pages=50)
    assert server.count == 2


def test_a_total_that_is_not_a_number_is_malformed_and_names_no_credential():
    api = RestApi(paginator=PageNumberPaginator(total_pages_path="pages"), auth=BearerAuth())
    body = {"data": RECORDS[:3], "pages": "many", "echo": SECRET}
    with (FaultServer(lambda request, n: json_reply(body)) as server,
          pytest.raises(rest.MalformedAnswer) as failure):
        fetch(server, api)
    assert server.count == 2  # one retry
    message = str(failure.value)
    assert "'pages' is str, not an integer" in message and SECRET not in message


def test_the_mes_declaration_pages_by_cursor_as_before():
    """The declared default is the MES's: `data`, `next_cursor`, `cursor`, `X-API-Key`."""
    assert RestApi() == RestApi(window=("updated_since", "updated_before"),
                                paginator=CursorPaginator(), auth=ApiKeyAuth("X-API-Key"))

    def answer(request, n):
        offset = int(request.query.get("cursor", "0"))
        rest_ = RECORDS[offset + 3:]
        return json_reply({"data": RECORDS[offset:offset + 3],
                           "next_cursor": str(offset + 3) if rest_ else None})

    with FaultServer(answer) as server:
        assert fetch(server, RestApi()) == RECORDS
    assert [r.query.get("cursor") for r in server.requests] == [None, "3", "6"]
    assert {r.headers["X-API-Key"] for r in server.requests} == {SECRET}


@pytest.mark.parametrize("header, target", [
    ('<https://api.example/items?page=2>; rel="next"', "https://api.example/items?page=2"),
    ('<a>; rel="prev", <b>; rel="next"', "b"),
    ('<a>; rel="last"', None),
    ('<a>; rel="prev next"', "a"),
    (None, None),
])
def test_next_link_reads_rfc_8288(header, target):
    assert next_link(header) == target
