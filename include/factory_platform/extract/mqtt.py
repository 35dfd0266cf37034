"""The `mqtt` interface: machine events of the unified namespace, landed exactly once.

MQTT is a stream, not a window a task can read: a broker hands a durable subscriber every
message published since it subscribed, once it acknowledges them. So the messages are landed
by a long-running process, `python -m factory_platform.extract.mqtt_ingest` (started with the
platform), and this module holds what it shares with the `extract_mqtt` DAG:

* **The raw table** `raw_mqtt.messages` (`ensure_tables`): one row per `message_id` (its
  primary key), topic, kind (the topic's last level), machine, event time, the JSON payload,
  `received_at` (when the row was written) and `_batch_id` (the load-audit batch).
* **A message, parsed or refused** (`parse_message`): over the payload limit (the
  connection's extra `max_payload_bytes`, 1 MiB: kept cut, with its length and digest), not
  UTF-8, not JSON, not an object, no `message_id`, no or a bad `event_time` (not an ISO time
  with a zone), a topic outside the namespace, a number the staging models cast that is not an
  integer of its type (`sources.mqtt.PAYLOAD_INTEGERS`: a hostile `"value": "12abc"` would
  otherwise fail every build) → quarantined with the topic and the reason. A value the warehouse refuses (a
  `message_id` too long for the key's index, a JSON string PostgreSQL cannot hold) is
  quarantined with the database's reason by the guarded COPY, the rest of its micro-batch lands:
  no message can hold the stream up.
* **One micro-batch, one transaction** (`MicroBatchWriter.write`): the rows by COPY into a
  temporary table and `insert … on conflict (message_id) do nothing` (a message the broker
  redelivers — after a consumer crash, a broker restart, or published twice by the plant — is
  counted as a duplicate, never landed twice; a `message_id` that comes again with another topic
  or payload is quarantined as such, the first one kept), the quarantined messages (each once,
  by a digest of topic and payload), the batch's counts added to the load audit's row of its minute, and the
  ingest's heartbeat. The ingest acknowledges the messages to the broker only after the commit:
  what the broker accepted is never lost, what committed is never landed again.
* **The load audit, per minute**: one `ops.load_audit` row per minute of ingest
  (`mqtt.messages:<minute>/<minute + 1>`), its counts the sum of that minute's micro-batches and
  its window the event times they carried (a late message widens it), `finished_at` the last
  commit. The transform takes the batches finished since its last run from there
  (transform_window.py), as for every other system — 1,440 rows a day, not one per micro-batch.
* **The DAG's job** (`close_interval`): the ingest cannot emit Airflow asset events, so
  `extract_mqtt` runs on its schedule, checks that the ingest is alive and subscribed (its
  heartbeat in `raw_mqtt.ingest_session`), sums what landed in its interval from the audit and
  emits the raw table's asset, which schedules `transform_dbt`. A scheduled run fails (an
  incident `ingest_down`, retries, the failure alert) when no ingest has reported within
  STALE_AFTER (none ever did, or it stopped) or when one that reports has not been subscribed
  for that long (the broker refused its login or its subscription, or cannot be reached: the
  broker's reason is in the error). A reload or a backfill only reports what raw holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from factory_platform.extract import incidents
from factory_platform.extract.load.batch import (
    QUARANTINE_PAYLOAD_BYTES,
    GuardedCopy,
    LoadTarget,
    batch_id_for,
    storable,
)
from factory_platform.extract.load.delivery import SourceRecord
from factory_platform.sources.mqtt import PAYLOAD_INTEGERS

log = logging.getLogger(__name__)

STREAMING = True  # extract.run: the task closes an interval, it does not read one
TABLE = "raw_mqtt.messages"
SESSION_TABLE = "raw_mqtt.ingest_session"
SYSTEM, ENTITY = "mqtt", "messages"
# the heartbeat is written with every micro-batch and at least this often while idle
HEARTBEAT_EVERY = timedelta(seconds=5)
# the DAG fails when the ingest's last heartbeat is older than this
STALE_AFTER = timedelta(minutes=2)
AUDIT_SLICE = timedelta(minutes=1)
# a larger payload is quarantined unparsed (the plant's events are a few hundred bytes; MQTT
# allows 256 MB, and a micro-batch holds up to 2,000 messages in memory)
MAX_PAYLOAD_BYTES = 1024 * 1024
INSERT_COLUMNS = ("message_id", "topic", "kind", "machine_code", "event_time", "payload",
                  "_batch_id")


class IngestNotAlive(RuntimeError):
    """No MQTT ingest has reported within STALE_AFTER, or one that reports has not been
    subscribed to its broker for that long."""

    incident_kind = "ingest_down"


# --- the connection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerSettings:
    """Where the ingest subscribes, from the Airflow connection (`plant_mqtt`): host, port,
    login, password; extra `client_id` (default `sfdp-<environment>-ingest`), `topic` (default
    the source's entity endpoint), `tls` (true: TLS with the system's CA store, `ca_certs` a
    CA file), `session_expiry_s` (how long the broker keeps the session while we are away),
    `max_payload_bytes` (a larger message is quarantined unparsed)."""

    host: str
    port: int
    login: str | None
    password: str | None = field(repr=False)
    client_id: str
    topic: str
    tls: bool = False
    ca_certs: str | None = None
    session_expiry_s: int = 14 * 24 * 3600
    max_payload_bytes: int = MAX_PAYLOAD_BYTES

    @property
    def label(self) -> str:
        return f"mqtt://{self.host}:{self.port} {self.topic} as {self.client_id}"


@dataclass
class BrokerLink:
    """The ingest's standing with its broker, as its heartbeat reports it: subscribed (the
    broker granted the topic filter at QoS 1), since when it is not, and the broker's last "no"
    (a refused login or subscription) or why the link is down — never a credential."""

    subscribed: bool = False
    down_since: datetime | None = field(default_factory=lambda: datetime.now(UTC))
    last_error: str | None = None

    def up(self) -> None:
        self.subscribed, self.down_since, self.last_error = True, None, None

    def down(self, why: str | None) -> None:
        self.subscribed = False
        self.down_since = self.down_since or datetime.now(UTC)
        self.last_error = why or self.last_error


def default_client_id() -> str:
    """One durable session per environment: `sfdp-<SFDP_ENVIRONMENT or host name>-ingest`."""
    env = os.environ.get("SFDP_ENVIRONMENT") or socket.gethostname().split(".")[0]
    return f"sfdp-{env}-ingest"


def broker_settings(conn_id: str, topic: str) -> BrokerSettings:
    """The broker of the Airflow connection `conn_id` (its password registered with the
    secrets masker, never logged)."""
    from airflow.sdk import BaseHook

    from factory_platform.warehouse import mask_secret

    conn = BaseHook.get_connection(conn_id)
    mask_secret(conn.password)
    extra = conn.extra_dejson or {}
    tls = str(extra.get("tls", "false")).lower() in ("1", "true", "yes")
    return BrokerSettings(
        host=conn.host or "127.0.0.1", port=int(conn.port or (8883 if tls else 1883)),
        login=conn.login or None, password=conn.password or None,
        client_id=str(extra.get("client_id") or default_client_id()),
        topic=str(extra.get("topic") or topic), tls=tls, ca_certs=extra.get("ca_certs"),
        session_expiry_s=int(extra.get("session_expiry_s", 14 * 24 * 3600)),
        max_payload_bytes=int(extra.get("max_payload_bytes", MAX_PAYLOAD_BYTES)),
    )


# --- tables -----------------------------------------------------------------------------------


def ensure_tables(conn, target: LoadTarget | None = None) -> None:
    """`raw_mqtt.messages` (message_id the primary key: the dedupe) and the ingest's heartbeat
    table; idempotent (bootstrap calls it for the registry's `mqtt` system)."""
    if conn.execute("select to_regclass(%s) is not null and exists (select from pg_attribute "
                    "where attrelid = to_regclass(%s) and attname = 'last_error') "
                    "and to_regclass('ops.quarantine_mqtt_ref') is not null",
                    (TABLE, SESSION_TABLE)).fetchone()[0]:
        return
    conn.execute("create schema if not exists raw_mqtt")
    conn.execute(f"""
        create table if not exists {TABLE} (
            message_id    text primary key,
            topic         text not null,
            kind          text not null,
            machine_code  text,
            event_time    timestamptz not null,
            payload       jsonb not null,
            received_at   timestamptz not null default clock_timestamp(),
            _batch_id     text not null
        )""")
    conn.execute(f"create index if not exists messages_kind_event_time on {TABLE} "
                 "(kind, event_time)")
    conn.execute(f"comment on table {TABLE} is 'MQTT messages of the unified namespace, one "
                 "per message_id (the ingest inserts on conflict do nothing: exactly once)'")
    conn.execute(f"""
        create table if not exists {SESSION_TABLE} (
            client_id     text primary key,
            host          text not null,
            pid           integer not null,
            started_at    timestamptz not null,
            beat_at       timestamptz not null,
            connected     boolean not null,
            received      bigint not null,
            loaded        bigint not null,
            duplicates    bigint not null,
            quarantined   bigint not null
        )""")
    conn.execute(f"comment on table {SESSION_TABLE} is 'The MQTT ingest''s heartbeat, per "
                 "durable session (client id): extract_mqtt fails when it is stale'")
    # not subscribed since (null while it is), and the broker's last "no" or why it is away
    conn.execute(f"alter table {SESSION_TABLE} add column if not exists disconnected_since "
                 "timestamptz, add column if not exists last_error text")
    # a refused message is quarantined once: looked up by its digest, not by a scan of every
    # mqtt row in quarantine (a publisher sending garbage would slow each batch down for ever)
    conn.execute("create index if not exists quarantine_mqtt_ref on ops.quarantine "
                 "(record_ref) where system = 'mqtt'")


# --- one message --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A message fit for raw."""

    message_id: str
    topic: str
    kind: str
    machine_code: str | None
    event_time: datetime
    payload_text: str


@dataclass(frozen=True)
class Refused:
    """A message that cannot land: quarantined once per (topic, payload)."""

    topic: str
    reason: str
    payload_text: str

    @property
    def record_ref(self) -> str:
        digest = hashlib.sha256(self.topic.encode() + b"\0" + self.payload_text.encode(
            "utf-8", "backslashreplace")).hexdigest()[:24]
        return f"sha256:{digest}"


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError  # noqa: TRY004 — the caller reports any of them as a bad event_time
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError
    return parsed.astimezone(UTC)


def not_an_integer(body: dict[str, Any], fields: dict[str, int]) -> str | None:
    """Which of a payload's `fields` (name → bits; `key.member`: a member of the object `key`)
    is there but not a JSON integer that fits its bits, or None. A JSON 5.0 or "5" is not one:
    the staging models cast the text PostgreSQL gives back, and '5.0'::bigint fails."""
    for name, bits in fields.items():
        key, _, member = name.partition(".")
        if key not in body or body[key] is None:
            continue
        if not member:
            found = [(name, body[key])]
        elif not isinstance(body[key], dict):
            return f"{key} is not a JSON object"
        else:
            found = [(name, body[key].get(member))]
        for label, value in found:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                return f"{label} {json.dumps(value)[:60]} is not a {bits}-bit integer"
    return None


def parse_message(topic: str, payload: bytes,
                  max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> Message | Refused:
    """One message of the namespace `<enterprise>/…/<machine>/<kind>`, or why it cannot land."""
    if len(payload) > max_payload_bytes:
        # not decoded nor parsed; quarantined cut, with what tells it from another one
        head = payload[:QUARANTINE_PAYLOAD_BYTES // 2].decode("utf-8", "backslashreplace")
        return Refused(topic, f"payload of {len(payload):,} bytes is over the limit of "
                       f"{max_payload_bytes:,} (max_payload_bytes)",
                       f"{head} … [cut: {len(payload):,} bytes in all, "
                       f"sha256:{hashlib.sha256(payload).hexdigest()}]")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Refused(topic, "payload is not UTF-8", payload.decode("utf-8", "backslashreplace"))
    levels = topic.split("/")
    if len(levels) < 2 or not all(levels):
        return Refused(topic, f"topic {topic!r} is not <enterprise>/…/<machine>/<kind>", text)
    try:
        body = json.loads(text)
    except ValueError as exc:
        return Refused(topic, f"payload is not JSON: {exc}".splitlines()[0][:300], text)
    if not isinstance(body, dict):
        return Refused(topic, "payload is not a JSON object", text)
    message_id = body.get("message_id")
    if not isinstance(message_id, str) or not message_id.strip():
        return Refused(topic, "no message_id", text)
    try:
        event_time = parse_time(body.get("event_time"))
    except (ValueError, OverflowError):
        return Refused(topic, f"event_time {body.get('event_time')!r} is not an ISO time with "
                       "a zone", text)
    kind = levels[-1]
    problem = not_an_integer(body, PAYLOAD_INTEGERS.get(kind, {}))
    if problem:
        return Refused(topic, f"{kind} payload: {problem}", text)
    machine = body.get("machine_code")
    if not isinstance(machine, str) or not machine:
        machine = levels[-2] if len(levels) >= 3 else None
    return Message(message_id=message_id, topic=topic, kind=kind, machine_code=machine,
                   event_time=event_time, payload_text=text)


def same_content(m: Message, topic: str, payload_text: str) -> bool:
    """The same message again (a redelivery, a second publish): same topic and JSON value."""
    return m.topic == topic and (m.payload_text == payload_text
                                 or json.loads(m.payload_text) == json.loads(payload_text))


def reused_id(m: Message) -> Refused:
    """A message whose id came before with another topic or payload: the publisher reused an
    id. The first stays; this one is kept in quarantine, not counted as a duplicate."""
    return Refused(m.topic, f"message_id {m.message_id[:200]!r} came before with another topic "
                   "or payload (the first one is kept)", m.payload_text)


# --- one micro-batch ----------------------------------------------------------------------------


@dataclass
class BatchCounts:
    received: int = 0
    loaded: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, other: BatchCounts) -> None:
        self.received += other.received
        self.loaded += other.loaded
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined


def audit_batch_id(at: datetime) -> str:
    """The load audit's batch of the minute `at` falls in."""
    start = at.replace(second=0, microsecond=0)
    return batch_id_for(SYSTEM, ENTITY, start, start + AUDIT_SLICE)


class MicroBatchWriter:
    """Writes micro-batches on one warehouse connection (see the module docstring)."""

    def __init__(self, conn, settings: BrokerSettings) -> None:
        self.conn = conn
        self.settings = settings
        self.started_at = datetime.now(UTC)
        self.totals = BatchCounts()
        self.host = socket.gethostname()
        self._temp_ready = False

    def use_connection(self, conn) -> None:
        """Go on on a new connection (the old one broke): its temporary table is made anew."""
        self.conn = conn
        self._temp_ready = False

    def _temp_table(self) -> None:
        """The micro-batch's staging table: raw's own columns, constraints and indexes, so
        whatever raw would refuse of a message (a message_id too long for the key's index, a
        JSON string PostgreSQL cannot hold) the guarded COPY refuses and quarantines alone —
        the insert into raw cannot fail on one message and hold the stream up for ever."""
        if not self._temp_ready:
            self.conn.execute(
                f"create temp table if not exists mqtt_incoming (like {TABLE} including defaults "
                "including constraints including indexes) on commit delete rows")
            self.conn.commit()
            self._temp_ready = True

    def write(self, messages: list[Message | Refused], link: BrokerLink) -> BatchCounts:
        """Land one micro-batch in one transaction; return its counts. Raises on a database
        error (after a rollback): the caller acknowledges nothing and retries."""
        self._temp_table()
        now = datetime.now(UTC)
        batch_id = audit_batch_id(now)
        counts = BatchCounts(received=len(messages))
        refused = [m for m in messages if isinstance(m, Refused)]
        good: dict[str, Message] = {}
        again: list[Message] = []  # an id the batch holds already: compared with what landed
        for m in messages:
            if isinstance(m, Message):
                if m.message_id in good:
                    again.append(m)
                else:
                    good[m.message_id] = m
        conn = self.conn
        try:
            quarantined: list[tuple[str, str, str, str | None]] = []
            copy = GuardedCopy(conn, "copy mqtt_incoming (message_id, topic, kind, machine_code, "
                               "event_time, payload, _batch_id) from stdin", quarantined)
            for m in good.values():
                copy.add(SourceRecord(m.topic, m.message_id, {}, m.payload_text),
                         [m.message_id, m.topic, m.kind, m.machine_code, m.event_time,
                          m.payload_text, batch_id])
            copy.flush()
            counts.loaded = conn.execute(
                f"insert into {TABLE} ({', '.join(INSERT_COLUMNS)}) "
                f"select {', '.join(INSERT_COLUMNS)} from mqtt_incoming "
                "on conflict (message_id) do nothing").rowcount
            not_landed = len(good) - len(quarantined) - counts.loaded
            if not_landed:  # redeliveries, or an id raw holds with another content
                reused = [reused_id(good[mid]) for (mid,) in conn.execute(
                    f"select i.message_id from mqtt_incoming i join {TABLE} r using (message_id) "
                    "where (r.topic, r.payload) is distinct from (i.topic, i.payload)")]
                refused += reused
                not_landed -= len(reused)
            counts.duplicates += not_landed
            if again:
                held = {mid: (topic, payload) for mid, topic, payload in conn.execute(
                    f"select message_id, topic, payload::text from {TABLE} "
                    "where message_id = any(%s)", ([m.message_id for m in again],))}
                for m in again:
                    first = good[m.message_id]
                    if same_content(m, *held.get(m.message_id,
                                                 (first.topic, first.payload_text))):
                        counts.duplicates += 1
                    else:
                        refused.append(reused_id(m))
            rows = [(r.topic, r.record_ref, r.reason, r.payload_text) for r in refused]
            rows += [(src, ref, reason, payload) for src, ref, reason, payload in quarantined]
            counts.quarantined = self._quarantine(batch_id, rows)
            counts.duplicates += len(rows) - counts.quarantined  # redelivered malformed ones
            window = conn.execute(
                "select min(event_time), max(event_time) from mqtt_incoming").fetchone()
            self._audit(batch_id, now, counts, window)
            totals = replace(self.totals)
            totals.add(counts)
            self._beat(link, totals)
            conn.commit()
        except Exception:
            conn.rollback()
            raise
        self.totals = totals
        return counts

    def _quarantine(self, batch_id: str, rows: list[tuple[str, str, str, str | None]]) -> int:
        """Each refused message once (a redelivery of the same topic and payload is not
        quarantined again); returns how many are new."""
        new = 0
        for topic, ref, reason, payload in rows:
            new += self.conn.execute(
                "insert into ops.quarantine (batch_id, system, entity, source, record_ref, "
                "reason, raw_payload) select %s, %s, %s, %s, %s, %s, %s where not exists ("
                # the literal system: the partial index quarantine_mqtt_ref serves the lookup
                f"select 1 from ops.quarantine where system = '{SYSTEM}' and entity = %s "
                "and source = %s and record_ref = %s)",
                (batch_id, SYSTEM, ENTITY, storable(topic, 500), storable(ref, 500),
                 storable(reason, 2000), storable(payload), ENTITY,
                 storable(topic, 500), storable(ref, 500))).rowcount
        return new

    def _audit(self, batch_id: str, now: datetime, counts: BatchCounts,
               window: tuple[datetime | None, datetime | None]) -> None:
        """Add the micro-batch to its minute's audit row; its window grows to the event times
        it carried (the transform re-processes them)."""
        minute = now.replace(second=0, microsecond=0)
        first = window[0] or minute
        last = (window[1] + timedelta(milliseconds=1)) if window[1] else minute + AUDIT_SLICE
        self.conn.execute(
            """
            insert into ops.load_audit (batch_id, system, entity, interval_start, interval_end,
                window_start, source, rows_read, rows_loaded, rows_quarantined,
                duplicates_skipped, rows_replaced, run_id, started_at, finished_at, status)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, clock_timestamp(),
                    'loaded')
            on conflict (batch_id) do update set
                interval_start = least(load_audit.interval_start, excluded.interval_start),
                interval_end = greatest(load_audit.interval_end, excluded.interval_end),
                window_start = least(load_audit.window_start, excluded.window_start),
                rows_read = load_audit.rows_read + excluded.rows_read,
                rows_loaded = load_audit.rows_loaded + excluded.rows_loaded,
                rows_quarantined = load_audit.rows_quarantined + excluded.rows_quarantined,
                duplicates_skipped = load_audit.duplicates_skipped + excluded.duplicates_skipped,
                finished_at = clock_timestamp()
            """,
            (batch_id, SYSTEM, ENTITY, first, last, first, self.settings.label[:500],
             counts.received, counts.loaded, counts.quarantined, counts.duplicates,
             f"ingest {self.settings.client_id}", now))

    def _beat(self, link: BrokerLink, totals: BatchCounts) -> None:
        """The ingest's row: alive now, its standing with the broker, its counts since it
        started."""
        self.conn.execute(
            f"""
            insert into {SESSION_TABLE} (client_id, host, pid, started_at, beat_at, connected,
                disconnected_since, last_error, received, loaded, duplicates, quarantined)
            values (%s, %s, %s, %s, clock_timestamp(), %s, %s, %s, %s, %s, %s, %s)
            on conflict (client_id) do update set host = excluded.host, pid = excluded.pid,
                started_at = excluded.started_at, beat_at = excluded.beat_at,
                connected = excluded.connected,
                disconnected_since = excluded.disconnected_since,
                last_error = excluded.last_error, received = excluded.received,
                loaded = excluded.loaded, duplicates = excluded.duplicates,
                quarantined = excluded.quarantined
            """,
            (self.settings.client_id, self.host, os.getpid(), self.started_at, link.subscribed,
             link.down_since, storable(link.last_error, 2000), totals.received, totals.loaded,
             totals.duplicates, totals.quarantined))

    def heartbeat(self, link: BrokerLink) -> None:
        """The heartbeat alone (an idle ingest is alive too)."""
        try:
            self._beat(link, self.totals)
            self.conn.commit()
        except Exception:
            self.conn.rollback()
            raise


# --- the DAG's task -----------------------------------------------------------------------------


def ingest_problem(sessions: list[tuple]) -> str | None:
    """Why the ingest is not doing its job, from its heartbeats (client_id, beat_at, beat age,
    subscribed, not subscribed for, last_error; the latest first), or None. Only the sessions
    that reported within STALE_AFTER count: a client id no longer used goes stale, harmlessly."""
    if not sessions:
        return ("no MQTT ingest has ever reported to this warehouse (raw_mqtt.ingest_session is "
                "empty): is `python -m factory_platform.extract.mqtt_ingest` running?")
    fresh = [s for s in sessions if s[2] <= STALE_AFTER]
    if not fresh:
        client_id, beat_at, age = sessions[0][:3]
        return (f"the MQTT ingest {client_id} last reported at {beat_at.isoformat()} "
                f"({age.total_seconds():.0f} s ago)")
    for client_id, _, _, _, down_for, last_error in fresh:
        if down_for is not None and down_for > STALE_AFTER:
            return (f"the MQTT ingest {client_id} has not been subscribed to its broker for "
                    f"{down_for.total_seconds():.0f} s: {last_error or 'no reason given'}")
    return None


def close_interval(source, entity, interval_start: datetime, interval_end: datetime,
                   run_id: str | None = None, dsn: str | None = None,
                   check_ingest: bool = True) -> dict:
    """`extract_mqtt`'s task: what the ingest landed in `[interval_start, interval_end)` (the
    audit rows of those minutes) and, for a scheduled run (`check_ingest`), whether it does its
    job: fails (`IngestNotAlive`, incident `ingest_down`, resolved by the next run that finds it
    well) on `ingest_problem`. A reload or a backfill reports what raw holds, whatever the
    ingest's state now."""
    import psycopg

    from factory_platform.warehouse import ensure_warehouse_once, warehouse_dsn

    dsn = dsn or warehouse_dsn()
    ensure_warehouse_once(dsn)
    with psycopg.connect(dsn) as conn:
        ensure_tables(conn)
        conn.commit()
        sessions = conn.execute(
            f"select client_id, beat_at, clock_timestamp() - beat_at, connected, "
            f"clock_timestamp() - disconnected_since, last_error from {SESSION_TABLE} "
            "order by beat_at desc").fetchall()
        read, loaded, quarantined, duplicates, batches = conn.execute(
            "select coalesce(sum(rows_read), 0), coalesce(sum(rows_loaded), 0), "
            "coalesce(sum(rows_quarantined), 0), coalesce(sum(duplicates_skipped), 0), count(*) "
            "from ops.load_audit where system = %s and entity = %s "
            "and started_at >= %s and started_at < %s",
            (SYSTEM, ENTITY, interval_start, interval_end)).fetchone()
    summary = {"batch_id": f"{SYSTEM}.{ENTITY}:{interval_start.isoformat()}/"
                           f"{interval_end.isoformat()}",
               "rows_read": int(read), "rows_loaded": int(loaded),
               "rows_quarantined": int(quarantined), "duplicates_skipped": int(duplicates),
               "audit_batches": int(batches), "ingest_client_id": None, "ingest_age_s": None,
               "ingest_connected": None}
    if sessions:
        client_id, _, age, connected = sessions[0][:4]
        summary.update(ingest_client_id=client_id, ingest_age_s=round(age.total_seconds(), 1),
                       ingest_connected=bool(connected))
    problem = ingest_problem(sessions)
    if problem and check_ingest:
        raise IngestNotAlive(problem)
    if problem:
        log.warning("mqtt: %s (a reload or backfill: not checked)", problem)
    elif check_ingest:
        with psycopg.connect(dsn) as conn:  # it does its job: an open ingest_down is over
            incidents.resolve(conn, source.system, entity.name, ("ingest_down",))
    log.info("mqtt: [%s, %s): %d received, %d landed, %d duplicates, %d quarantined in %d audit "
             "batches; ingest %s", interval_start, interval_end, read, loaded, duplicates,
             quarantined, batches, problem or f"{summary['ingest_client_id']} well")
    return summary
