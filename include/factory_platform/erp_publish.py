"""Exactly-once write-back to the ERP (the outbox pattern, ../shared/design/PATTERNS.md §2).

`publish.pub_erp__*` models (dbt) say what the ERP *should* hold, one row per business key
with the message body (`erp_payload`) and its `content_hash`. `ops.erp_outbox` remembers what
*was* sent. A publish run, per message type:

1. resends every `pending` row with its own idempotency key (a crash between sending and
   recording leaves one; the ERP answers `duplicate` for what it already has — done);
2. plans, in one transaction, for the scopes the gate lets through (`dq.scope_status`:
   passed, or flagged → posted with `dq_flagged`): a new business key → posting v1; same key
   and hash → nothing; a changed hash → a reversal of the accepted version and posting v+1
   (after a rejected version: only v+1). New rows are committed as `pending` **before**
   anything is sent;
3. sends the pending rows in order through the ERP's inbound interface
   (`erp.post_message(key, type, payload)`) and records each answer in its own transaction.

Idempotency keys are `<type>:<business key>:v<version>` (a reversal appends `:reversal`), so
a retried task, a re-run interval or a backfill that reproduces the same numbers posts nothing
new, and the ERP never sees a key twice with different content.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC

log = logging.getLogger(__name__)

MESSAGE_MODELS = {
    # ERP message type: publish model that says what the ERP should hold
    "production_confirmation": "publish.pub_erp__production_confirmation",
    "goods_movement": "publish.pub_erp__goods_movement",
    "quality_result": "publish.pub_erp__quality_result",
}


@dataclass
class PublishResult:
    message_type: str
    planned_postings: int = 0
    planned_reversals: int = 0
    unchanged: int = 0
    resent: int = 0
    answers: Counter = field(default_factory=Counter)
    blocked_scopes: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "message_type": self.message_type, "planned_postings": self.planned_postings,
            "planned_reversals": self.planned_reversals, "unchanged": self.unchanged,
            "resent": self.resent, "answers": dict(self.answers),
            "blocked_scopes": [f"{site} {day}: {', '.join(checks)}"
                               for site, day, checks in self.blocked_scopes],
        }


DIFF_SQL = """
create temporary table erp_diff on commit drop as
with wanted as (
    select m.business_key, m.content_hash, m.erp_payload, m.site_code, m.production_date,
           m.order_number, s.decision = 'flagged' as dq_flagged
    from {model} m
    join dq.scope_status s
      on s.site_code = m.site_code and s.production_day = m.production_date
    where s.decision in ('passed', 'flagged')
),
current_version as (
    select distinct on (business_key) *
    from ops.erp_outbox
    where message_type = %(type)s and kind = 'posting'
    order by business_key, version desc
)
select w.*, c.business_key is not null and c.content_hash = w.content_hash as unchanged,
       c.version as current_version, c.state as current_state,
       c.idempotency_key as current_key, c.payload as current_payload,
       c.content_hash as current_hash
from wanted w
left join current_version c on c.business_key = w.business_key
"""

# reversals first, so that outbox order (= sending order) puts each before its new version
REVERSALS_SQL = """
insert into ops.erp_outbox (idempotency_key, message_type, business_key, version, kind,
                            content_hash, payload, site_code, production_date, order_number,
                            reverses_key, dq_flagged, run_id)
select current_key || ':reversal', %(type)s, business_key, current_version, 'reversal',
       current_hash, current_payload || jsonb_build_object('reversal_of', current_key),
       site_code, production_date, order_number, current_key, dq_flagged, %(run_id)s
from erp_diff
where not unchanged and current_state = 'accepted'
order by business_key
"""

POSTINGS_SQL = """
insert into ops.erp_outbox (idempotency_key, message_type, business_key, version, kind,
                            content_hash, payload, site_code, production_date, order_number,
                            dq_flagged, run_id)
select %(type)s || ':' || business_key || ':v' || (coalesce(current_version, 0) + 1),
       %(type)s, business_key, coalesce(current_version, 0) + 1, 'posting', content_hash,
       erp_payload, site_code, production_date, order_number, dq_flagged, %(run_id)s
from erp_diff
where not unchanged
order by business_key
"""


def publish_to_erp(dsn: str, erp_dsn: str, run_id: str,
                   message_types: list[str] | None = None) -> list[PublishResult]:
    """Publish every message type (or the given ones); see the module docstring."""
    import psycopg

    results = []
    with psycopg.connect(dsn) as conn, psycopg.connect(erp_dsn, autocommit=True) as erp:
        for message_type in message_types or list(MESSAGE_MODELS):
            result = PublishResult(message_type)
            # one publisher per message type at a time (a retry overlapping a slow attempt)
            conn.execute("select pg_advisory_lock(hashtext(%s))", (f"erp_outbox {message_type}",))
            conn.commit()
            try:
                result.resent = _send_pending(conn, erp, message_type, run_id, result)
                _plan(conn, message_type, run_id, result)
                _send_pending(conn, erp, message_type, run_id, result)
            finally:
                conn.execute("select pg_advisory_unlock(hashtext(%s))",
                              (f"erp_outbox {message_type}",))
                conn.commit()
            log.info("ERP %s: %s", message_type, result.as_dict())
            results.append(result)
    return results


def _plan(conn, message_type: str, run_id: str, result: PublishResult) -> None:
    model = MESSAGE_MODELS[message_type]
    params = {"type": message_type, "run_id": run_id}
    conn.execute(DIFF_SQL.format(model=model), params)
    result.planned_reversals = conn.execute(REVERSALS_SQL, params).rowcount
    result.planned_postings = conn.execute(POSTINGS_SQL, params).rowcount
    result.unchanged = conn.execute("select count(*) from erp_diff where unchanged").fetchone()[0]
    result.blocked_scopes = [
        (site, str(day), list(checks)) for site, day, checks in conn.execute(
            f"select distinct s.site_code, s.production_day, s.failing_checks "
            f"from {model} m join dq.scope_status s on s.site_code = m.site_code "
            f"and s.production_day = m.production_date where s.decision = 'blocked' "
            f"order by 1, 2")
    ]
    conn.commit()  # pending rows are durable before anything is sent


def _send_pending(conn, erp, message_type: str, run_id: str, result: PublishResult) -> int:
    """Send the type's pending rows in creation order; record each answer as it comes."""
    pending = conn.execute(
        "select outbox_id, idempotency_key, payload from ops.erp_outbox "
        "where message_type = %s and state = 'pending' order by outbox_id", (message_type,),
    ).fetchall()
    conn.commit()
    from psycopg.types.json import Jsonb

    for outbox_id, key, payload in pending:
        answer = erp.execute(
            "select status, reason, erp_document_number from erp.post_message(%s, %s, %s)",
            (key, message_type, Jsonb(payload)),
        ).fetchone()
        _record_answer(conn, outbox_id, run_id, *answer)
        result.answers[answer[0]] += 1
    return len(pending)


def _record_answer(conn, outbox_id: int, run_id: str, status: str, reason: str | None,
                   document_number: str | None) -> None:
    """`duplicate` means the ERP had the key already: its original answer decides the state."""
    if status == "duplicate":
        state = "accepted" if (reason or "").startswith("already received: accepted") else "rejected"
    else:
        state = status
    conn.execute(
        "update ops.erp_outbox set state = %s, erp_answer = %s, erp_reason = %s, "
        "erp_document_number = %s, answered_at = now(), answered_in_run = %s "
        "where outbox_id = %s",
        (state, status, reason, document_number, run_id, outbox_id),
    )
    conn.commit()
    if state == "rejected":
        log.warning("ERP rejected outbox row %s: %s", outbox_id, reason)


def read_back_acknowledgements(dsn: str, run_id: str, margin_hours: int = 1) -> dict:
    """Load the ERP's own record of what arrived (erp.inbound_postings) around the answers
    this run received, so the reconciliation compares with the ERP side, not with our outbox.
    The window comes from the outbox (first to last answer of the run, widened for clock skew
    between us and the ERP); a run that sent nothing reads nothing back."""
    from datetime import timedelta

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
        orders, unreconciled = conn.execute(
            "select count(*), count(*) filter (where not is_reconciled) "
            "from marts.mart_erp_reconciliation").fetchone()
    return {"orders": orders, "unreconciled_orders": unreconciled}


def write_b2mml(dsn: str, run_id: str, out_dir) -> list[str]:
    """The confirmations this run posted, as B2MML documents (one per site and day)."""
    from datetime import datetime
    from pathlib import Path

    import psycopg
    from psycopg.rows import dict_row

    from factory_platform.b2mml import write_documents

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        confirmations = conn.execute(
            "select p.*, o.version as posting_version "
            "from ops.erp_outbox o join publish.pub_erp__production_confirmation p "
            "  on p.business_key = o.business_key and p.content_hash = o.content_hash "
            "where o.message_type = 'production_confirmation' and o.kind = 'posting' "
            "  and o.state = 'accepted' and o.run_id = %s",
            (run_id,)).fetchall()
    if not confirmations:
        return []
    rows = [dict(row, material_code=row["material_number"]) for row in confirmations]
    paths = write_documents(rows, Path(out_dir) / _safe(run_id),
                            created_at=datetime.now(UTC).replace(microsecond=0))
    return [str(p) for p in paths]


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
