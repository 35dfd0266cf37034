"""Change signals: a plant system that can tell us something changed starts its load at once.

A source opts in with one line of its registry module, `change_feed=...` (`sources.Source`):

* `"api"` — a REST change feed (MES, QMS). Every `POLL_SECONDS` the trigger asks each entity's
  endpoint for one record updated since the entity's high-water mark (`ops.extract_watermark`)
  and before now — the window's own query parameters, the paginator's page size set to 1, the
  source's auth — and a record there is a change no batch has loaded yet.
* `"inbox"` — a file drop (WMS, SCADA, EMS, PLM): a file in the inbox whose name fits an entity
  and that the extraction would take — settled (unchanged for the source's `settle_time`, or
  its `completion_marker` beside it), or not a regular file (the run sets it aside at once).

`dag_factory` schedules such an `extract_<system>` DAG on `AssetOrTimeSchedule`: its cron (the
safety net: a missed signal waits one interval at most) *or* the asset
`x-change-feed://plant/<system>`, whose `AssetWatcher` runs this module's trigger in the
triggerer. An event starts an asset-triggered run; it has no data interval, so
`dag_factory.run_window` gives it the short window [start of the schedule interval that holds
its `run_after`, `run_after`), loaded like a scheduled run (from the high-water mark, with the
lookback). The idempotency rules are the scheduled runs' ones: a micro-batch is a short window.

**One signal per change.** The API is asked about whole seconds up to the last one, `[since,
now)`, `since` being the later of the entity's high-water mark (rounded up to the second) and
the end of the range that last gave a signal: a record is signalled once, and one that appears
while the run started by the previous signal is still loading starts the next run at once
(`max_active_runs` 2), not after it. When the mark has not passed a signal `REARM_AFTER` later
(the run failed), the entity is asked from its mark again, and a change it still lacks is
signalled again (the next scheduled run retries anyway). A file is signalled once per name,
size and modification time. A triggerer restart forgets all this and costs at most one extra
run.

**The triggerer's event loop is never blocked.** The API is asked through httpx's asynchronous
transport (one request per entity, a deadline each; the transport follows no redirect and
logs no request line), the warehouse through psycopg's `AsyncConnection` (one connection of the
extraction's role, `warehouse_load`, kept open), the inbox listed in a worker thread. A source
that does not answer is logged once when it starts failing and once when it answers again;
the trigger keeps polling. **Secrets**: the trigger's kwargs (stored in Airflow's trigger
table, shown in its log) are the system's slug and timings only; the connections are read when
the trigger starts (`BaseHook.aget_connection`, which registers their secrets with the
masker), the API's secret goes into a request header only, and no message names a header or a
DSN.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

POLL_SECONDS = 5.0
REARM_AFTER = timedelta(minutes=15)
REQUEST_DEADLINE_S = 10.0  # one probe: connect, headers and body
MAX_PROBE_BODY_BYTES = 1 << 20
CHANGE_FEED_SCHEME = "x-change-feed"


def change_feed_uri(system: str) -> str:
    return f"{CHANGE_FEED_SCHEME}://plant/{system}"


def change_feed_asset(source):
    """The asset whose watcher follows `source`'s change feed; None when it declares none."""
    if not source.change_feed:
        return None
    from airflow.sdk import Asset, AssetWatcher

    trigger_class = TRIGGERS[source.change_feed]
    return Asset(name=f"{source.system}_changes", uri=change_feed_uri(source.system),
                 group="change_feed",
                 watchers=[AssetWatcher(name=f"{source.system}_change_feed",
                                        trigger=trigger_class(system=source.system))])


class ChangeTrigger(BaseEventTrigger):
    """Polls a source every `poll_seconds` and yields one event per detected change."""

    def __init__(self, system: str, poll_seconds: float = POLL_SECONDS,
                 rearm_seconds: float = REARM_AFTER.total_seconds()) -> None:
        super().__init__()
        self.system = system
        self.poll_seconds = float(poll_seconds)
        self.rearm_seconds = float(rearm_seconds)
        self._failing: str | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"system": self.system, "poll_seconds": self.poll_seconds,
                 "rearm_seconds": self.rearm_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from factory_platform.sources import get_source

        source = await asyncio.to_thread(get_source, self.system)
        watch = None
        try:
            while True:
                try:
                    if watch is None:
                        watch = await self.open(source)
                    change = await watch.poll()
                    self._answered()
                except Exception as exc:  # noqa: BLE001 — log, keep polling: never end the watch
                    self._failed(exc)
                    if watch is not None:  # connect again next time; what it signalled stays
                        await watch.reset()
                    change = None
                if change:
                    self.log.info("%s changed: %s", self.system, change)
                    yield TriggerEvent({"system": self.system, **change})
                await asyncio.sleep(self.poll_seconds)
        finally:
            if watch is not None:
                await watch.close()

    async def open(self, source):
        raise NotImplementedError

    def _failed(self, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        if reason != self._failing:
            self.log.warning("%s change feed: no answer (%s); polling on every %gs",
                             self.system, reason, self.poll_seconds)
        self._failing = reason

    def _answered(self) -> None:
        if self._failing is not None:
            self.log.info("%s change feed answers again", self.system)
        self._failing = None


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _up_to_second(ts: datetime) -> datetime:
    """`ts` rounded up to a whole second (an API that reads whole seconds sees the same)."""
    whole = ts.replace(microsecond=0)
    return whole if whole == ts else whole + timedelta(seconds=1)


class ProbeFailed(RuntimeError):
    """The API answered something other than a page."""


class ApiChangeTrigger(ChangeTrigger):
    """`change_feed="api"`: a record updated since an entity's high-water mark."""

    async def open(self, source):
        from airflow.sdk import BaseHook

        from factory_platform.warehouse import connection_dsn, job_connection

        api = await BaseHook.aget_connection(source.conn_id)
        warehouse = await BaseHook.aget_connection(
            job_connection("warehouse", dag_id=source.dag_id, task_id="watch_changes"))
        scheme = api.extra_dejson.get("scheme", "http")
        port = f":{api.port}" if api.port else ""
        return ApiWatch(
            source, base_url=f"{scheme}://{api.host}{port}",
            headers=source.rest.auth.headers(api.login or None, api.password or None),
            dsn=connection_dsn(warehouse.host, warehouse.port, warehouse.login,
                               warehouse.password, warehouse.schema),
            rearm=timedelta(seconds=self.rearm_seconds))


class ApiWatch:
    """What `ApiChangeTrigger` keeps between polls: its HTTP transport and warehouse
    connection, and when it last signalled each entity."""

    def __init__(self, source, *, base_url: str, headers: dict[str, str], dsn: str,
                 rearm: timedelta) -> None:
        import httpx

        self.source = source
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.dsn = dsn
        self.rearm = rearm
        self.started = datetime.now(UTC).replace(microsecond=0)
        self.entities = [e for e in source.entities
                         if e.cursor and e.option("mode") != "snapshot"]
        self.signalled: dict[str, datetime] = {}
        self.transport = httpx.AsyncHTTPTransport(retries=0)
        self.conn = None

    async def poll(self) -> dict | None:
        """The entities with a record updated since their high-water mark and since the last
        signal, up to the last whole second (None: no change)."""
        marks = await self.watermarks()
        now = datetime.now(UTC).replace(microsecond=0)
        changed = []
        for entity in self.entities:
            mark = marks.get(entity.name)
            since = _up_to_second(mark) if mark else self.started
            signalled = self.signalled.get(entity.name)
            if signalled and since < signalled and now - signalled < self.rearm:
                since = signalled  # what came before the signal is its run's to load
            if since < now and await self.probe(entity, since, now):
                changed.append(entity.name)
        if not changed:
            return None
        for entity in self.entities:  # the run it starts loads every entity of the source
            self.signalled[entity.name] = now
        return {"entities": changed, "changed_before": now.isoformat()}

    async def watermarks(self) -> dict[str, datetime]:
        import psycopg

        if self.conn is None:
            self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True,
                                                              connect_timeout=10)
        cursor = await self.conn.execute(
            "select entity, loaded_upto from ops.extract_watermark where system = %s",
            (self.source.system,))
        return dict(await cursor.fetchall())

    async def probe(self, entity, since: datetime, before: datetime) -> bool:
        """Does one record exist with `since <= cursor < before`? (one request, page size 1)"""
        import httpx

        api = self.source.rest
        since_param, before_param = api.window
        params = {since_param: _iso(since), before_param: _iso(before),
                  **api.paginator.query(None, 1)}
        url = f"{self.base_url}{entity.endpoint}?{urlencode(params)}"
        timeout = {"connect": REQUEST_DEADLINE_S, "read": REQUEST_DEADLINE_S,
                   "write": REQUEST_DEADLINE_S, "pool": REQUEST_DEADLINE_S}
        request = httpx.Request("GET", url, headers={**self.headers, "Accept": "application/json"},
                                extensions={"timeout": timeout})
        async with asyncio.timeout(REQUEST_DEADLINE_S):
            response = await self.transport.handle_async_request(request)
            try:
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > MAX_PROBE_BODY_BYTES:
                        raise ProbeFailed(f"{self.base_url}{entity.endpoint}: answer over "
                                          f"{MAX_PROBE_BODY_BYTES} bytes")
            finally:
                await response.aclose()
        if response.status_code != 200:
            raise ProbeFailed(f"{self.base_url}{entity.endpoint}: HTTP {response.status_code}")
        try:
            records, _ = api.paginator.read(json.loads(body), response.headers, None, 1)
        except Exception as exc:  # noqa: BLE001 — not a page: the source is not answering well
            raise ProbeFailed(f"{self.base_url}{entity.endpoint}: not a page "
                              f"({type(exc).__name__})") from None
        return bool(records)

    async def reset(self) -> None:
        """After a failure: the warehouse connection is opened again at the next poll."""
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                await conn.close()
            except Exception:  # noqa: BLE001, S110 — a broken connection: nothing to keep
                pass

    async def close(self) -> None:
        await self.reset()
        await self.transport.aclose()


class InboxChangeTrigger(ChangeTrigger):
    """`change_feed="inbox"`: a file the extraction would take landed in the inbox."""

    async def open(self, source):
        from airflow.sdk import BaseHook

        conn = await BaseHook.aget_connection(source.conn_id)
        path = conn.extra_dejson.get("path")
        if not path:
            raise ValueError(f"connection {source.conn_id!r} has no extra.path (the inbox)")
        return InboxWatch(source, Path(path))


class InboxWatch:
    """The files of an inbox signalled so far, by name: (size, mtime)."""

    def __init__(self, source, inbox: Path) -> None:
        self.source = source
        self.inbox = inbox
        self.signalled: dict[str, tuple[int, int]] = {}

    async def poll(self) -> dict | None:
        ready = await asyncio.to_thread(takeable_files, self.source, self.inbox, time.time())
        new = sorted(name for name, seen in ready.items() if self.signalled.get(name) != seen)
        self.signalled = ready  # a name that left the inbox may come back: a new delivery
        if not new:
            return None
        return {"files": new[:20], "file_count": len(new),
                "detected_at": datetime.now(UTC).isoformat()}

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None


def takeable_files(source, inbox: Path, now: float) -> dict[str, tuple[int, int]]:
    """name → (size, mtime_ns) of the inbox's files that an extraction run would take now: a
    name that fits one of the source's entities, visible, and settled (its completion marker
    beside it, or unchanged for `settle_time`) or not a regular file (set aside at once)."""
    patterns = [re.compile(entity.endpoint) for entity in source.entities]
    settle = source.settle_time.total_seconds()
    try:
        with os.scandir(inbox) as listing:
            entries = [e for e in listing if not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"inbox {inbox} is not a folder here (is the plant's share "
                                "mounted where the triggerer runs?)") from None
    names = {e.name for e in entries}
    ready = {}
    for entry in entries:
        if not any(p.fullmatch(entry.name) for p in patterns):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        marker = (source.completion_marker.format(name=entry.name)
                  if source.completion_marker else None)
        if (not stat.S_ISREG(st.st_mode) or (marker and marker in names)
                or now - st.st_mtime >= settle):
            ready[entry.name] = (st.st_size, st.st_mtime_ns)
    return ready


TRIGGERS = {"api": ApiChangeTrigger, "inbox": InboxChangeTrigger}
