"""Source incidents: what an operator must see about a source that is not one bad record.

A bad record goes to `ops.quarantine` with its reason. Some faults concern a whole delivery or a
whole answer instead — a file that is still being written, a file set aside (a link, a broken
re-delivery, a file over the reject threshold, a wrong encoding), a file whose name matches no
entity, a late file, an API answer that was refused (empty where rows were, malformed, a
cursor that does not advance), a batch that failed. Each is one row in `ops.source_incident`,
open until the condition clears, counted per sighting, and alerted once
(`alerted_at`; a waiting file only once it has waited an hour; a failed batch or a refused
answer fails its task, whose failure alert says so). `mart_source_health` and the report show the open ones per source.

Clients put incidents on their `Extraction` (`extraction.incidents`); the loader writes them in
the batch's transaction. A failure before the load (the answer refused, the source
unreachable) is recorded by the extraction task (`extract.run`) from the exception: an
exception that carries `incident_kind` is recorded under that kind, any other as
`batch_failed`. Subjects and reasons name the file or the request, never a file's content or a
credential.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

# kind → (what it means, alerted?)
KINDS: dict[str, tuple[str, bool]] = {
    "file_waiting": (
        ("a file is still being written (size or mtime changed within the settle time); it is "
        "taken once stable"), False),
    "file_late": (
        ("a file arrived after its own interval and its lookback; it was loaded into its own "
        "window"), True),
    "file_set_aside": (
        ("a file was set aside whole (a link or special file, unreadable, cut off, empty, wrong "
        "encoding, over the size limit)"), True),
    "file_rejected": (
        ("a file had more bad records than the source allows: set aside whole, the window's "
        "other files loaded"), True),
    "file_unmatched": ("a file in the inbox whose name matches no entity of the source", True),
    "redelivery_set_aside": (
        ("a file delivered again under a loaded name was broken: set aside, the loaded rows and "
        "the archived original kept"), True),
    # These two fail their task, whose failure callback alerts already (with the same error).
    "answer_refused": (
        ("an API answer was refused (empty where rows were, malformed, wrongly shaped, a cursor "
        "that did not advance, too many pages)"), False),
    "batch_failed": (
        "an extraction batch failed; its window is retried by the next runs (high-water mark)",
        False),
    "ingest_down": (
        ("a streaming ingest (MQTT) has not reported for too long, or has not been subscribed to "
         "its broker for too long (the broker's reason given); the broker keeps the messages for "
         "its session until it is back"), False),
}
# A file still waiting after this long is alerted as stuck (an exporter that never finishes).
WAITING_ALERT_AFTER = "1 hour"
# Cleared by the next batch of the same entity that loads.
CLEARED_BY_A_LOAD = ("answer_refused", "batch_failed")


@dataclass(frozen=True)
class Incident:
    """One fault of a delivery or an answer: `subject` names the file or request, `reason`
    says what is wrong — neither ever quotes content or a credential."""

    kind: str
    subject: str
    reason: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown incident kind {self.kind!r}; known: {sorted(KINDS)}")


class RefusedAnswer(RuntimeError):
    """A source's answer that must not be applied (recorded as an `answer_refused` incident)."""

    incident_kind = "answer_refused"


def record(conn, system: str, entity: str, incidents, batch_id: str | None = None) -> None:
    """Open each incident, or count one more sighting of the same open one."""
    for incident in incidents:
        conn.execute(
            "insert into ops.source_incident (system, entity, kind, subject, reason, batch_id) "
            "values (%s, %s, %s, %s, %s, %s) "
            "on conflict (system, entity, kind, subject) where resolved_at is null do update "
            "set reason = excluded.reason, batch_id = excluded.batch_id, "
            "last_seen_at = clock_timestamp(), "
            "times_seen = ops.source_incident.times_seen + 1",
            (system, entity, incident.kind, incident.subject[:500], incident.reason[:2000],
             batch_id),
        )


def resolve(conn, system: str, entity: str, kinds, subjects=None) -> int:
    """Close open incidents of these kinds (only these subjects, if given)."""
    if subjects is not None and not subjects:
        return 0
    query = ("update ops.source_incident set resolved_at = clock_timestamp() "
             "where system = %s and entity = %s and kind = any(%s) and resolved_at is null")
    params: list = [system, entity, list(kinds)]
    if subjects is not None:
        query += " and subject = any(%s)"
        params.append(list(subjects))
    return conn.execute(query, params).rowcount


def alert_new(dsn: str, system: str | None = None) -> int:
    """Send one alert per open, alerting incident not alerted yet; returns how many."""
    import psycopg

    from factory_platform.alerts import send_alert

    alerting = [kind for kind, (_, alerted) in KINDS.items() if alerted]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select incident_id, system, entity, kind, subject, reason from ops.source_incident "
            "where resolved_at is null and alerted_at is null "
            "and (kind = any(%s) or (kind = 'file_waiting' "
            "     and last_seen_at - first_seen_at > %s::interval)) "
            "and (%s::text is null or system = %s) order by incident_id for update skip locked",
            (alerting, WAITING_ALERT_AFTER, system, system),
        ).fetchall()
        for incident_id, sys_, entity, kind, subject, reason in rows:
            send_alert(f"Source incident: {sys_}.{entity} {kind}", f"{subject}: {reason}",
                       system=sys_, entity=entity, kind=kind, subject=subject)
            conn.execute("update ops.source_incident set alerted_at = clock_timestamp() "
                         "where incident_id = %s", (incident_id,))
    return len(rows)


def acknowledge(dsn: str, system: str, kind: str | None = None,
                subject: str | None = None) -> int:
    """Close open incidents an operator has dealt with (a set-aside file looked at, a sender
    told): file incidents stay open until acknowledged, the others clear by themselves."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "update ops.source_incident set resolved_at = clock_timestamp() "
            "where resolved_at is null and system = %s and (%s::text is null or kind = %s) "
            "and (%s::text is null or subject = %s)",
            (system, kind, kind, subject, subject)).rowcount


def main(argv: list[str] | None = None) -> int:
    """`python -m factory_platform.extract.incidents list|ack …` with the libpq environment
    (`.env`): the open incidents, or acknowledge them."""
    import argparse

    import psycopg

    from factory_platform.warehouse import env_dsn

    parser = argparse.ArgumentParser(prog="python -m factory_platform.extract.incidents")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="open incidents, newest first")
    ack = sub.add_parser("ack", help="close open incidents of a system (one kind or subject)")
    ack.add_argument("system")
    ack.add_argument("--kind", choices=sorted(KINDS))
    ack.add_argument("--subject")
    args = parser.parse_args(argv)
    if args.command == "ack":
        print(f"acknowledged {acknowledge(env_dsn(), args.system, args.kind, args.subject)}")
        return 0
    with psycopg.connect(env_dsn()) as conn:
        for row in conn.execute(
                "select system, entity, kind, subject, times_seen, last_seen_at, reason "
                "from ops.source_incident where resolved_at is null "
                "order by last_seen_at desc"):
            print(" | ".join(str(value) for value in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
