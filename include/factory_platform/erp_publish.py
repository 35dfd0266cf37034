"""Exactly-once write-back to the ERP (the transactional outbox: write what to send, then send), also
when the ERP says no.

`publish.pub_erp__*` models (dbt) say what the ERP *should* hold, one row per business key
with the message body (`erp_payload`) and its `content_hash`. `ops.erp_outbox` remembers what
*was* sent and what the ERP answered. A publish run holds the publish-models lock
(quality/checked.py: no transform rewrites a publish model meanwhile) and, per message type:

1. sends the rows still `pending` (a crash between sending and recording, a transient
   rejection whose backoff has passed) with their own idempotency keys — the ERP answers
   `duplicate` for what it already has;
2. plans, in one transaction, per business key, from what the ERP effectively holds (accepted
   postings not reversed by an accepted reversal) and what the publish model says, for the
   scopes (site × production day) the latest passed gate run **checked** — their rows still
   hash to what it recorded in `dq.checked_publish` — and let through (`dq.scope_status`
   passed, or flagged → posted with `dq_flagged`):
   - new key → posting v1; same content → nothing; changed content → a reversal of the
     effective posting and posting v+1, a **pair**: v+1 is sent only once the reversal is
     accepted (`requires_key`);
   - a key **vanished** from the publish model (its checked scope no longer has it) → the
     reversal of its effective posting (usual ERP practice), unless more than
     `max(VANISH_MIN, VANISH_SHARE × effective keys)` of the type vanish at once: then none is
     reversed, they are held (`vanished_bulk`) and alerted — a broken model looks like that;
   - a posted key whose scope is **blocked** now → nothing: the posting stays in the ERP as it
     was checked when posted, the key is held (`scope_blocked`) and alerted, and released
     automatically once the scope passes again (then the usual comparison applies);
   - a scope whose rows changed since the gate checked them → nothing until the next gate;
   - a key with a row in flight (pending) → nothing until that row is answered;
   - a publish row without site or production day (no scope the gate could check) → nothing.
   New rows are committed as `pending` **before** anything is sent;
3. sends the pending rows in order through the ERP's inbound interface
   (`erp.post_message(key, type, payload)`) and records each answer in its own transaction.

Answers: `accepted` (or `duplicate` of an accepted message) → accepted. A **transient**
rejection (`reason_code` TRANSIENT_*, e.g. the order is not yet known to the ERP) leaves the row
`pending`; it is sent again, with the same key, by a later run after a backoff
(`retry_backoff` × 2^(attempts−1), at most `MAX_BACKOFF`), and alerted once it has been
rejected `ALERT_AFTER_ATTEMPTS` times. Any other rejection is **permanent**: the row is
`rejected`, the key is **held** (`ops.erp_hold`, kind `erp_rejected`: no further version or
reversal is posted for it, a new version waiting for a rejected reversal is `cancelled`,
never sent) and alerted; `marts.mart_erp_reconciliation` shows held and retrying
confirmations per order.

Releasing a held key (after fixing the cause in the ERP or in the data):

    python -m factory_platform.erp_publish holds
    python -m factory_platform.erp_publish release production_confirmation <business key> \\
        --by <your name> --note "<what you did>"

(or `update ops.erp_hold set released_at = now(), released_by = …, release_note = … where
message_type = … and business_key = … and released_at is null`). The next run plans the key
again from what the ERP effectively holds: e.g. after a rejected reversal of v1 it posts a new
reversal of v1 (key `…:v1:reversal-2`) and then v3. A key you never want posted again stays held.

Idempotency keys are `<type>:<business key>:v<version>` (a reversal appends `:reversal`, a
second reversal of the same posting `:reversal-2`, …), so a retried task, a re-run interval or
a backfill that reproduces the same numbers posts nothing new, and the ERP never sees a key
twice with different content.

B2MML (`write_b2mml`): every accepted confirmation posting is written to exactly one
`ProcessOperationsPerformance` document — by the first publish run after it was accepted,
whichever run planned or re-sent it; a document of a run that crashed before recording it is
replaced.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, timedelta

from factory_platform.quality.checked import (
    EFFECTIVE_POSTINGS_SQL,
    MESSAGE_MODELS,
    latest_passed_gate,
    publish_models_locked,
    scope_hashes_sql,
)

log = logging.getLogger(__name__)

__all__ = ["MESSAGE_MODELS", "PublishResult", "alerts_for", "publish_to_erp", "reconcile",
           "release_hold", "write_b2mml"]

RETRY_BACKOFF = timedelta(minutes=5)  # first wait after a transient rejection
MAX_BACKOFF = timedelta(hours=6)
ALERT_AFTER_ATTEMPTS = 6  # a row rejected transiently this often is alerted (and still retried)
VANISH_MIN = 20  # reversing more vanished keys of a type at once than this …
VANISH_SHARE = 0.05  # … and this share of its effective keys needs a human
LISTED = 50  # entries of a list kept in a result (XCom, alerts)

# fields a B2MML document needs beyond the payload, kept with the outbox row
DOCUMENT_FIELDS = {
    "production_confirmation": "jsonb_build_object('line_code', m.line_code, 'shift_code', "
                               "m.shift_code, 'run_seconds', m.run_seconds)",
}


@dataclass
class PublishResult:
    message_type: str
    gate_run_id: str | None = None
    planned_postings: int = 0
    planned_reversals: int = 0
    unchanged: int = 0
    resent: int = 0
    answers: Counter = field(default_factory=Counter)
    actions: Counter = field(default_factory=Counter)
    waiting_ids: set[int] = field(default_factory=set)  # pending rows not sent: backoff, or
    # their reversal is not accepted yet
    cancelled: int = 0
    blocked_scopes: list[tuple[str, str, list[str]]] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)  # "key: code (attempt n, next at …)"
    stuck: list[str] = field(default_factory=list)  # rejected transiently ALERT_AFTER_ATTEMPTS times
    held: list[str] = field(default_factory=list)  # keys held by a permanent rejection now
    frozen: list[str] = field(default_factory=list)  # posted keys held now: scope blocked
    vanish_guarded: list[str] = field(default_factory=list)  # held now: too many vanished
    released: list[str] = field(default_factory=list)  # holds released automatically

    @property
    def waiting(self) -> int:
        return len(self.waiting_ids)

    def as_dict(self) -> dict:
        def listed(items: list[str]) -> list[str]:
            more = len(items) - LISTED
            return items[:LISTED] + ([f"… and {more} more"] if more > 0 else [])

        return {
            "message_type": self.message_type, "gate_run_id": self.gate_run_id,
            "planned_postings": self.planned_postings,
            "planned_reversals": self.planned_reversals, "unchanged": self.unchanged,
            "resent": self.resent, "answers": dict(self.answers), "actions": dict(self.actions),
            "waiting": self.waiting, "cancelled": self.cancelled,
            "blocked_scopes": [f"{site} {day}: {', '.join(checks)}"
                               for site, day, checks in self.blocked_scopes],
            "retrying": listed(self.retrying), "stuck": listed(self.stuck),
            "held": listed(self.held), "frozen": listed(self.frozen),
            "vanish_guarded": listed(self.vanish_guarded), "released": listed(self.released),
        }


# --- planning -------------------------------------------------------------------------------

SCOPES_SQL = """
create temporary table erp_scopes on commit drop as
with current_scopes as ({hashes}),
checked as (
    select * from dq.checked_publish where run_id = %(gate)s and message_type = %(type)s
)
select c.site_code, c.production_day, c.row_count,
       k.content_hash is not null and k.content_hash = c.content_hash
           and k.row_count = c.row_count as checked,
       s.decision, coalesce(s.failing_checks, '{{}}') as failing_checks
from current_scopes c
left join checked k on k.site_code = c.site_code and k.production_day = c.production_day
left join dq.scope_status s on s.site_code = c.site_code and s.production_day = c.production_day
"""

KEYS_SQL = """
create temporary table erp_keys on commit drop as
with wanted as (
    select m.business_key, m.content_hash, m.erp_payload, m.site_code, m.production_date,
           m.order_number, {document_fields} as document_fields
    from {model} m
),
effective_all as (
    select e.*, row_number() over (partition by e.business_key order by e.version desc) as nth
    from ({effective}) e
),
effective as (select * from effective_all where nth = 1),
versions as (
    select business_key, max(version) as max_version from ops.erp_outbox
    where message_type = %(type)s group by 1
),
reversals as (
    select reverses_key, count(*) as n from ops.erp_outbox
    where message_type = %(type)s and kind = 'reversal' group by 1
),
in_flight as (
    select distinct business_key from ops.erp_outbox
    where message_type = %(type)s and state = 'pending'
),
holds as (
    select business_key, kind, hold_id from ops.erp_hold
    where message_type = %(type)s and released_at is null
),
joined as (
    select coalesce(w.business_key, e.business_key) as business_key,
           w.business_key is not null as wanted, e.business_key is not null as posted,
           w.content_hash, w.erp_payload, w.site_code, w.production_date, w.order_number,
           w.document_fields,
           e.idempotency_key as posted_key, e.version as posted_version,
           e.payload as posted_payload,
           e.content_hash as posted_hash, e.site_code as posted_site,
           e.production_date as posted_day, e.order_number as posted_order,
           coalesce(v.max_version, 0) as max_version, coalesce(r.n, 0) as posted_reversals,
           coalesce(s.checked, false) as checked, s.decision, s.failing_checks,
           case when w.business_key is not null then w.site_code else e.site_code end
               as scope_site,
           case when w.business_key is not null then w.production_date else e.production_date
           end as scope_day,
           h.kind as hold_kind, h.hold_id, i.business_key is not null as in_flight
    from wanted w
    full join effective e on e.business_key = w.business_key
    left join versions v on v.business_key = coalesce(w.business_key, e.business_key)
    left join reversals r on r.reverses_key = e.idempotency_key
    left join erp_scopes s
      on s.site_code = case when w.business_key is not null then w.site_code else e.site_code end
     and s.production_day = case when w.business_key is not null then w.production_date
                                 else e.production_date end
    left join holds h on h.business_key = coalesce(w.business_key, e.business_key)
    left join in_flight i on i.business_key = coalesce(w.business_key, e.business_key)
)
select joined.*,
       case
           when hold_kind = 'erp_rejected' then 'held'
           when in_flight then 'in_flight'
           when hold_kind = 'vanished_bulk' and not wanted then 'held'
           when scope_site is null or scope_day is null then 'unscoped'
           when decision = 'blocked' then case when posted then 'frozen' else 'blocked' end
           when wanted and posted and content_hash = posted_hash then 'unchanged'
           when not checked or decision is null then 'unchecked'
           when not wanted then 'vanished'
           when posted then 'changed'
           else 'new'
       end as action,
       case when posted_reversals = 0 then posted_key || ':reversal'
            else posted_key || ':reversal-' || (posted_reversals + 1) end as reversal_key
from joined
"""

# every effective posting of a key but its latest (only a double booking of the old publisher,
# which posted a new version although its reversal was rejected): reversed
DOUBLE_BOOKINGS_SQL = """
insert into ops.erp_outbox (idempotency_key, message_type, business_key, version, kind,
                            content_hash, payload, site_code, production_date, order_number,
                            reverses_key, dq_flagged, run_id, plan_reason, gate_run_id)
select e.idempotency_key || ':reversal'
           || case when r.n is null then '' else '-' || (r.n + 1) end,
       %(type)s, e.business_key, e.version, 'reversal', e.content_hash,
       e.payload || jsonb_build_object('reversal_of', e.idempotency_key),
       e.site_code, e.production_date, e.order_number, e.idempotency_key, false, %(run_id)s,
       'double_booking', %(gate)s
from (select x.*, row_number() over (partition by x.business_key order by x.version desc) as nth
      from ({effective}) x) e
join erp_keys k on k.business_key = e.business_key and k.action not in ('held', 'in_flight')
left join (select reverses_key, count(*) as n from ops.erp_outbox
           where message_type = %(type)s and kind = 'reversal' group by 1) r
  on r.reverses_key = e.idempotency_key
where e.nth > 1
order by e.business_key, e.version
"""

# reversals first, so that outbox order (= sending order) puts each before its new version
REVERSALS_SQL = """
insert into ops.erp_outbox (idempotency_key, message_type, business_key, version, kind,
                            content_hash, payload, site_code, production_date, order_number,
                            reverses_key, dq_flagged, run_id, plan_reason, gate_run_id)
select reversal_key, %(type)s, business_key, posted_version, 'reversal', posted_hash,
       posted_payload || jsonb_build_object('reversal_of', posted_key),
       posted_site, posted_day, posted_order, posted_key,
       action = 'changed' and decision = 'flagged', %(run_id)s, action, %(gate)s
from erp_keys
where action in ('changed', 'vanished')
order by business_key
"""

POSTINGS_SQL = """
insert into ops.erp_outbox (idempotency_key, message_type, business_key, version, kind,
                            content_hash, payload, site_code, production_date, order_number,
                            dq_flagged, run_id, requires_key, plan_reason, gate_run_id,
                            document_fields)
select %(type)s || ':' || business_key || ':v' || (max_version + 1),
       %(type)s, business_key, max_version + 1, 'posting', content_hash, erp_payload,
       site_code, production_date, order_number, decision = 'flagged', %(run_id)s,
       case when action = 'changed' then reversal_key end, action, %(gate)s, document_fields
from erp_keys
where action in ('changed', 'new')
order by business_key
"""

HOLDS_SQL = """
insert into ops.erp_hold (message_type, business_key, kind, reason, site_code, production_date,
                          order_number, held_in_run)
select %(type)s, business_key, %(kind)s,
       case when %(kind)s = 'scope_blocked'
            then 'scope ' || scope_site || ' ' || scope_day || ' blocked after posting: '
                 || array_to_string(failing_checks, ', ')
            else 'vanished from the publish model together with too many other keys' end,
       scope_site, scope_day, coalesce(order_number, posted_order), %(run_id)s
from erp_keys
where action = %(action)s and hold_id is null
order by business_key
on conflict (message_type, business_key) where released_at is null do nothing
returning business_key
"""


def publish_to_erp(dsn: str, erp_dsn: str, run_id: str,
                   message_types: list[str] | None = None, *,
                   retry_backoff: timedelta = RETRY_BACKOFF,
                   max_vanished: int | None = None) -> list[PublishResult]:
    """Publish every message type (or the given ones); see the module docstring.
    `max_vanished` overrides the vanished-keys guard (reversals of vanished keys per type and
    run)."""
    import psycopg

    from factory_platform.warehouse import ensure_warehouse_once

    ensure_warehouse_once(dsn)
    results = []
    with psycopg.connect(dsn) as conn, psycopg.connect(erp_dsn, autocommit=True) as erp, \
            publish_models_locked(conn):
        gate = latest_passed_gate(conn)
        conn.commit()
        if gate is None:
            log.warning("no gate run has passed yet: nothing new is published")
        for message_type in message_types or list(MESSAGE_MODELS):
            result = PublishResult(message_type, gate_run_id=gate)
            attempted: set[int] = set()
            result.resent = _send_pending(conn, erp, message_type, run_id, result, attempted,
                                          retry_backoff)
            _plan(conn, message_type, run_id, gate, result, max_vanished)
            _send_pending(conn, erp, message_type, run_id, result, attempted, retry_backoff)
            log.info("ERP %s: %s", message_type, result.as_dict())
            results.append(result)
    return results


def _plan(conn, message_type: str, run_id: str, gate: str | None, result: PublishResult,
          max_vanished: int | None) -> None:
    model = MESSAGE_MODELS[message_type]
    params = {"type": message_type, "run_id": run_id, "gate": gate}
    conn.execute(SCOPES_SQL.format(hashes=scope_hashes_sql(message_type)), params)
    conn.execute(KEYS_SQL.format(
        model=model, effective=EFFECTIVE_POSTINGS_SQL,
        document_fields=DOCUMENT_FIELDS.get(message_type, "null::jsonb")), params)

    vanished, posted = conn.execute(
        "select count(*) filter (where action = 'vanished'), count(*) filter (where posted) "
        "from erp_keys").fetchone()
    limit = max_vanished if max_vanished is not None else max(VANISH_MIN,
                                                              int(VANISH_SHARE * posted))
    if vanished > limit:
        log.error("%d %s keys vanished from %s at once (limit %d): none is reversed, they are "
                  "held (vanished_bulk) until they are back or a human releases them",
                  vanished, message_type, model, limit)
        conn.execute("update erp_keys set action = 'vanish_guarded' where action = 'vanished'")

    # automatic holds end: the scope passes again, the key is back in the model
    result.released = [key for (key,) in conn.execute(
        "update ops.erp_hold h set released_at = now(), released_by = 'publish_erp', "
        "release_note = case when h.kind = 'scope_blocked' then 'scope no longer blocked' "
        "                    else 'key back in the publish model' end "
        "from erp_keys k where h.hold_id = k.hold_id "
        "and h.kind in ('scope_blocked', 'vanished_bulk') "
        "and k.action not in ('held', 'frozen', 'vanish_guarded') returning h.business_key")]
    for action, kind, target in (("frozen", "scope_blocked", result.frozen),
                                 ("vanish_guarded", "vanished_bulk", result.vanish_guarded)):
        target.extend(key for (key,) in conn.execute(
            HOLDS_SQL, {**params, "kind": kind, "action": action}))

    double_bookings = conn.execute(DOUBLE_BOOKINGS_SQL.format(effective=EFFECTIVE_POSTINGS_SQL),
                                   params).rowcount
    if double_bookings:
        log.warning("%d %s postings were booked twice by an earlier publisher (a new version "
                    "although the reversal was rejected): reversed now", double_bookings,
                    message_type)
    result.planned_reversals = double_bookings + conn.execute(REVERSALS_SQL, params).rowcount
    result.planned_postings = conn.execute(POSTINGS_SQL, params).rowcount
    result.actions = Counter(dict(conn.execute(
        "select action, count(*) from erp_keys group by 1").fetchall()))
    if double_bookings:
        result.actions["double_booking"] = double_bookings
    result.unchanged = result.actions.get("unchanged", 0)
    result.blocked_scopes = [
        (site, str(day), list(checks)) for site, day, checks in conn.execute(
            "select site_code, production_day, failing_checks from erp_scopes "
            "where decision = 'blocked' and row_count > 0 order by 1, 2")
    ]
    if result.actions.get("unchecked"):
        log.warning("%d %s keys are in scopes whose rows changed since gate run %s checked "
                    "them: they wait for the next gate", result.actions["unchecked"],
                    message_type, gate)
    conn.commit()  # pending rows are durable before anything is sent


# --- sending --------------------------------------------------------------------------------

PENDING_SQL = """
select o.outbox_id, o.idempotency_key, o.payload, o.business_key, o.requires_key, o.attempts,
       o.next_attempt_at is null or o.next_attempt_at <= now() as due
from ops.erp_outbox o
where o.message_type = %(type)s and o.state = 'pending'
order by o.outbox_id
"""


def _send_pending(conn, erp, message_type: str, run_id: str, result: PublishResult,
                  attempted: set[int], retry_backoff: timedelta) -> int:
    """Send the type's pending rows in creation order — each at most once per run, not before
    its backoff ends, a new version only once its reversal is accepted — and record each
    answer as it comes. Returns how many were sent."""
    from psycopg.rows import dict_row
    from psycopg.types.json import Jsonb

    pending = conn.execute(PENDING_SQL, {"type": message_type}).fetchall()
    conn.commit()
    states: dict[str, str] = {}
    sent = 0
    for outbox_id, key, payload, business_key, requires_key, attempts, due in pending:
        if outbox_id in attempted:
            continue
        if not due:
            result.waiting_ids.add(outbox_id)
            continue
        if requires_key is not None:
            required = states.get(requires_key) or _state_of(conn, requires_key)
            if required in ("rejected", "cancelled"):
                result.cancelled += _cancel(conn, message_type, business_key, run_id,
                                            f"{requires_key} was rejected")
                continue
            if required != "accepted":  # the reversal waits (backoff, in flight): so does v+1
                result.waiting_ids.add(outbox_id)
                continue
        attempted.add(outbox_id)
        with erp.cursor(row_factory=dict_row) as cursor:
            answer = cursor.execute("select * from erp.post_message(%s, %s, %s)",
                                    (key, message_type, Jsonb(payload))).fetchone()
        sent += 1
        status = answer["status"]
        states[key] = _record_answer(
            conn, outbox_id, run_id, status, answer.get("reason"),
            answer.get("erp_document_number"), reason_code=answer.get("reason_code"),
            attempts=attempts, retry_backoff=retry_backoff, result=result,
            message_type=message_type, business_key=business_key, key=key)
        result.answers[status] += 1
    return sent


def _state_of(conn, key: str) -> str | None:
    row = conn.execute("select state from ops.erp_outbox where idempotency_key = %s",
                       (key,)).fetchone()
    conn.commit()
    return row[0] if row else None


def _cancel(conn, message_type: str, business_key: str, run_id: str, why: str) -> int:
    cancelled = conn.execute(
        "update ops.erp_outbox set state = 'cancelled', erp_reason = %s, answered_in_run = %s "
        "where message_type = %s and business_key = %s and state = 'pending'",
        (f"not sent: {why}", run_id, message_type, business_key)).rowcount
    conn.commit()
    return cancelled


def classify(status: str, reason: str | None, reason_code: str | None) -> str:
    """accepted, transient or permanent. A `duplicate` has the original's fate (transient
    rejections are not kept by the ERP, so a duplicate of a rejection is permanent); a
    rejection without a TRANSIENT_* code is permanent — a human looks at it."""
    if status == "accepted":
        return "accepted"
    if status == "duplicate":
        return ("accepted" if (reason or "").startswith("already received: accepted")
                else "permanent")
    if status == "retry" or (reason_code or "").upper().startswith("TRANSIENT"):
        return "transient"
    return "permanent"


def backoff(attempts: int, base: timedelta = RETRY_BACKOFF) -> timedelta:
    """Wait after the `attempts`-th transient rejection: base × 2^(attempts−1), capped."""
    return min(base * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


def _record_answer(conn, outbox_id: int, run_id: str, status: str, reason: str | None,
                   document_number: str | None, *, reason_code: str | None = None,
                   attempts: int = 0, retry_backoff: timedelta = RETRY_BACKOFF,
                   result: PublishResult | None = None, message_type: str | None = None,
                   business_key: str | None = None, key: str | None = None) -> str:
    """Record one answer in its own transaction; return the row's new state. A permanent
    rejection holds the key and cancels its other pending rows in the same transaction."""
    fate = classify(status, reason, reason_code)
    attempts += 1
    answer = status if status in ("accepted", "duplicate", "rejected") else "rejected"
    common = {"answer": answer, "reason": reason, "code": reason_code, "doc": document_number,
              "run": run_id, "id": outbox_id, "attempts": attempts}
    if fate == "accepted":
        conn.execute(
            "update ops.erp_outbox set state = 'accepted', erp_answer = %(answer)s, "
            "erp_reason = %(reason)s, erp_reason_code = %(code)s, erp_document_number = %(doc)s, "
            "rejection_class = null, next_attempt_at = null, attempts = %(attempts)s, "
            "answered_at = now(), answered_in_run = %(run)s where outbox_id = %(id)s", common)
        state = "accepted"
    elif fate == "transient":
        wait = backoff(attempts, retry_backoff)
        conn.execute(
            "update ops.erp_outbox set state = 'pending', erp_answer = %(answer)s, "
            "erp_reason = %(reason)s, erp_reason_code = %(code)s, rejection_class = 'transient', "
            "attempts = %(attempts)s, next_attempt_at = now() + %(wait)s, answered_at = now(), "
            "answered_in_run = %(run)s where outbox_id = %(id)s", {**common, "wait": wait})
        state = "pending"
        log.warning("ERP rejected %s transiently (%s: %s), attempt %d: sent again after %s",
                    key or outbox_id, reason_code, reason, attempts, wait)
        if result is not None:
            result.retrying.append(f"{key}: {reason_code} (attempt {attempts}, again in {wait})")
            if attempts == ALERT_AFTER_ATTEMPTS:
                result.stuck.append(f"{key}: {reason_code} {reason} ({attempts} attempts)")
    else:
        conn.execute(
            "update ops.erp_outbox set state = 'rejected', erp_answer = %(answer)s, "
            "erp_reason = %(reason)s, erp_reason_code = %(code)s, rejection_class = 'permanent', "
            "erp_document_number = %(doc)s, next_attempt_at = null, attempts = %(attempts)s, "
            "answered_at = now(), answered_in_run = %(run)s where outbox_id = %(id)s", common)
        row = conn.execute(
            "select message_type, business_key, site_code, production_date, order_number "
            "from ops.erp_outbox where outbox_id = %s", (outbox_id,)).fetchone()
        held = conn.execute(
            "insert into ops.erp_hold (message_type, business_key, kind, reason, reason_code, "
            "outbox_id, site_code, production_date, order_number, held_in_run) "
            "values (%s, %s, 'erp_rejected', %s, %s, %s, %s, %s, %s, %s) "
            "on conflict (message_type, business_key) where released_at is null do nothing",
            (row[0], row[1], f"ERP rejected {key or outbox_id}: {reason}", reason_code,
             outbox_id, row[2], row[3], row[4], run_id)).rowcount
        cancelled = conn.execute(
            "update ops.erp_outbox set state = 'cancelled', answered_in_run = %s, "
            "erp_reason = 'not sent: the key is held (' || %s || ' was rejected)' "
            "where message_type = %s and business_key = %s and state = 'pending' "
            "and outbox_id <> %s", (run_id, key or str(outbox_id), row[0], row[1],
                                    outbox_id)).rowcount
        state = "rejected"
        log.warning("ERP rejected %s for good (%s: %s): key %s held%s", key or outbox_id,
                    reason_code, reason, row[1],
                    f", {cancelled} waiting row(s) cancelled" if cancelled else "")
        if result is not None:
            result.cancelled += cancelled
            if held:
                result.held.append(f"{row[1]}: {reason_code or status} {reason}")
    conn.commit()
    return state


# --- holds ----------------------------------------------------------------------------------

def release_hold(dsn: str, message_type: str, business_key: str, released_by: str,
                 note: str = "") -> int:
    """Release the open hold of a key (any kind); the next publish run plans it again from what
    the ERP effectively holds. Returns the number of holds released (0 or 1)."""
    import psycopg

    if not released_by.strip():
        raise ValueError("say who releases the hold")
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "update ops.erp_hold set released_at = now(), released_by = %s, release_note = %s "
            "where message_type = %s and business_key = %s and released_at is null",
            (released_by, note, message_type, business_key)).rowcount


def open_holds(dsn: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select message_type, business_key, kind, order_number, held_at, reason "
            "from ops.erp_hold where released_at is null order by held_at, hold_id").fetchall()


def alerts_for(results: list[dict]) -> list[tuple[str, str]]:
    """(title, text) of the alerts a publish run raises, from its results' `as_dict()`."""
    alerts = []

    def gather(name: str) -> list[str]:
        return [f"{r['message_type']} {item}" for r in results for item in r.get(name, [])]

    blocked = sorted({s for r in results for s in r["blocked_scopes"]})
    if blocked:
        alerts.append(("ERP publishing held back blocked scopes", "\n".join(blocked)))
    held_title = ("ERP rejected postings for good: keys held until a human releases them "
                  "(python -m factory_platform.erp_publish release)")
    frozen_title = ("Scopes blocked after their keys were posted: postings kept, keys held "
                    "until the scope passes")
    vanish_title = ("Too many keys vanished from a publish model at once: nothing reversed, "
                    "keys held")
    stuck_title = (f"ERP keeps rejecting postings transiently ({ALERT_AFTER_ATTEMPTS} "
                   f"attempts): still retried")
    for name, title in (
        ("held", held_title), ("frozen", frozen_title), ("vanish_guarded", vanish_title),
        ("stuck", stuck_title),
    ):
        items = gather(name)
        if items:
            alerts.append((title, "\n".join(items)))
    return alerts


# --- read back, reconcile, B2MML --------------------------------------------------------------

def read_back_acknowledgements(dsn: str, run_id: str, margin_hours: int = 1) -> dict:
    """Load the ERP's own record of what arrived (erp.inbound_postings) around the answers
    this run received, so the reconciliation compares with the ERP side, not with our outbox.
    The window comes from the outbox (first to last answer of the run, widened for clock skew
    between us and the ERP); a run that sent nothing reads nothing back."""
    import psycopg

    from factory_platform.extract.run import extract_interval

    with psycopg.connect(dsn) as conn:
        first, last = conn.execute(
            "select min(answered_at), max(answered_at) from ops.erp_outbox "
            "where answered_in_run = %s", (run_id,)).fetchone()
    if first is None:
        log.info("run %s sent nothing to the ERP: nothing to read back", run_id)
        return {"rows_loaded": 0, "skipped": "nothing sent in this run"}
    margin = timedelta(hours=margin_hours)
    return extract_interval("erp", "inbound_postings", first - margin, last + margin,
                            run_id=run_id, dsn=dsn)


def reconcile(dsn: str) -> dict:
    """Rebuild mart_erp_reconciliation (and the staged ERP answers it reads); return totals."""
    import psycopg

    from factory_platform.dbt_project import run_dbt

    done = run_dbt(dsn, "build", "--select", "stg_erp__inbound_postings",
                   "mart_erp_reconciliation")
    if done.returncode != 0:
        raise RuntimeError(f"dbt build of the reconciliation failed:\n{done.stdout[-4000:]}")
    with psycopg.connect(dsn) as conn:
        orders, unreconciled, pending, retrying, held = conn.execute(
            "select count(*), count(*) filter (where not is_reconciled), "
            "sum(pending_confirmations), sum(retrying_confirmations), "
            "sum(held_confirmations) from marts.mart_erp_reconciliation").fetchone()
    return {"orders": orders, "unreconciled_orders": unreconciled,
            "pending_confirmations": int(pending or 0),
            "retrying_confirmations": int(retrying or 0), "held_confirmations": int(held or 0)}


B2MML_ROWS_SQL = """
select o.outbox_id, o.b2mml_run_id, o.b2mml_file,
       o.business_key as confirmation_key, o.version as posting_version,
       o.payload ->> 'order_number' as order_number,
       o.payload ->> 'operation_id' as operation_id,
       o.site_code, o.document_fields ->> 'line_code' as line_code,
       o.payload ->> 'machine_code' as machine_code,
       o.payload ->> 'material_number' as material_code,
       o.production_date, o.document_fields ->> 'shift_code' as shift_code,
       (o.payload ->> 'started_at')::timestamptz as started_at,
       (o.payload ->> 'ended_at')::timestamptz as ended_at,
       (o.payload ->> 'yield_qty')::numeric as good_qty,
       (o.payload ->> 'scrap_qty')::numeric as scrap_qty,
       (o.payload ->> 'rework_qty')::numeric as rework_qty,
       o.payload ->> 'unit' as uom,
       coalesce((o.document_fields ->> 'run_seconds')::bigint,
                extract(epoch from (o.payload ->> 'ended_at')::timestamptz
                                   - (o.payload ->> 'started_at')::timestamptz)::bigint)
           as run_seconds
from ops.erp_outbox o
where o.message_type = 'production_confirmation' and o.kind = 'posting'
  and o.state = 'accepted' and o.b2mml_due and o.b2mml_written_at is null
order by o.outbox_id
for update
"""


def write_b2mml(dsn: str, run_id: str, out_dir) -> list[str]:
    """Every accepted confirmation posting not yet in a B2MML document — whichever run planned
    or re-sent it — as B2MML documents (one per site and production day) under
    `<out_dir>/<run>/`; each posting is then marked written. The rows are claimed for this run
    before writing; a document left by a run that crashed before marking its rows is removed
    once this run has written them again, so every accepted posting ends up in exactly one.

    A document is never rewritten once its postings are marked: its name carries the claim (the
    lowest outbox id it holds), so a second write of the same run — a retried task that accepted
    more postings after the first attempt wrote its documents — adds documents beside the first.
    A claim whose rows were not marked (the writer crashed) has the same lowest id when it is
    written again, and replaces its own document."""
    from datetime import datetime
    from pathlib import Path

    import psycopg
    from psycopg.rows import dict_row

    from factory_platform.b2mml import document_file_name, write_documents
    from factory_platform.warehouse import ensure_warehouse_once

    ensure_warehouse_once(dsn)
    target = Path(out_dir) / _safe(run_id)
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        rows = conn.execute(B2MML_ROWS_SQL).fetchall()
        if not rows:
            return []
        stale = {row["b2mml_file"] for row in rows if row["b2mml_file"]}  # written, unmarked
        claim = f"o{min(row['outbox_id'] for row in rows)}"
        with conn.cursor() as cursor:
            cursor.executemany(
                "update ops.erp_outbox set b2mml_run_id = %s, b2mml_file = %s "
                "where outbox_id = %s",
                [(run_id, str(target / document_file_name(row["site_code"],
                                                          row["production_date"], claim)),
                  row["outbox_id"]) for row in rows])
        conn.commit()  # claimed: a crash from here on leaves them to the next run
    paths = write_documents(rows, target, created_at=datetime.now(UTC).replace(microsecond=0),
                            batch=claim)
    for stale_file in stale - {str(p) for p in paths}:
        Path(stale_file).unlink(missing_ok=True)
    with psycopg.connect(dsn) as conn:
        conn.execute("update ops.erp_outbox set b2mml_written_at = now() "
                     "where outbox_id = any(%s)", ([row["outbox_id"] for row in rows],))
    log.info("B2MML: %d accepted confirmation postings in %d documents", len(rows), len(paths))
    return [str(p) for p in paths]


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


# --- command line ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """`holds`: list the open holds. `release TYPE KEY --by NAME [--note TEXT]`: release one.
    The warehouse comes from the libpq variables (`set -a; . ./.env; set +a`)."""
    import argparse

    from factory_platform.warehouse import env_dsn

    parser = argparse.ArgumentParser(prog="python -m factory_platform.erp_publish",
                                     description="ERP publishing: held business keys")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("holds", help="list the open holds")
    release = commands.add_parser("release", help="release a held key: the next publish run "
                                                  "plans it again")
    release.add_argument("message_type", choices=sorted(MESSAGE_MODELS))
    release.add_argument("business_key")
    release.add_argument("--by", required=True, help="who releases it")
    release.add_argument("--note", default="", help="what was done about the cause")
    args = parser.parse_args(argv)
    dsn = env_dsn()
    if args.command == "holds":
        for row in open_holds(dsn):
            print("\t".join("" if v is None else str(v) for v in row))
        return 0
    released = release_hold(dsn, args.message_type, args.business_key, args.by, args.note)
    print(f"released {released} hold(s) of {args.message_type} {args.business_key}")
    return 0 if released else 1


if __name__ == "__main__":
    sys.exit(main())
