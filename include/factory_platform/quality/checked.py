"""What the gate checked, and whether it completed: the contract between the quality gate and
`publish_erp` (../erp_publish.py).

- **Checked content.** The dbt gate step (dbt_gate.py) records, per transform run, ERP message
  type and scope (site × production day), which publish rows its tests saw: their count and an
  md5 over `business_key=content_hash` in key order (`dq.checked_publish`). Scopes that hold an
  effective ERP posting but no publish row any more (every key of the day vanished) are recorded
  too, as empty: a reversal of a vanished key is also posted only once checked.
  `publish_erp` posts a scope only while its rows still hash to what the latest passed gate run
  checked: rows added or changed after the gate ran wait for the next gate.
- **Completion.** Every check step writes a `dq.gate_step` row when it completed (its results
  recorded, failing or not). `close_gate` (the `quality_gate` task) passes a run only when every
  required step did, and records it in `dq.gate_run`; a step that crashed fails the gate closed.
- **No overlap.** Writers of the publish models (the dbt models' pre-hook, macro
  `publish_models_lock`), the dbt gate step and `publish_erp`'s posting task hold the
  transaction- or session-level Postgres advisory lock `PUBLISH_MODELS_LOCK`: a publish model is
  never rewritten while the gate reads it or the publisher plans from it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import contextmanager

log = logging.getLogger(__name__)

# pg_advisory_lock key shared with dbt_project/macros/publish_models_lock.sql
PUBLISH_MODELS_LOCK = 2026121201
GATE_STEPS = ("dbt_gate", "gx_gate")
KEEP_PASSED_RUNS = 3  # checked content kept for the latest passed gate runs (and newer runs)

# ERP message type: the publish model that says what the ERP should hold
MESSAGE_MODELS = {
    "production_confirmation": "publish.pub_erp__production_confirmation",
    "goods_movement": "publish.pub_erp__goods_movement",
    "quality_result": "publish.pub_erp__quality_result",
}

EFFECTIVE_POSTINGS_SQL = """
select p.* from ops.erp_outbox p
where p.message_type = %(type)s and p.kind = 'posting' and p.state = 'accepted'
  and not exists (select 1 from ops.erp_outbox r
                  where r.reverses_key = p.idempotency_key and r.kind = 'reversal'
                    and r.state = 'accepted')
"""

# per scope: the publish rows (count, md5 of business_key=content_hash in key order), and the
# scopes of effective postings without any publish row left (count 0, md5 of '')
SCOPE_HASHES_SQL = """
with model_scopes as (
    select site_code, production_date as production_day, count(*) as row_count,
           md5(coalesce(string_agg(coalesce(business_key, '') || '=' || coalesce(content_hash, ''),
                                   ',' order by business_key), '')) as content_hash
    from {model}
    where site_code is not null and production_date is not null
    group by 1, 2
),
effective as ({effective})
select * from model_scopes
union all
select distinct e.site_code, e.production_date, 0::bigint, md5('')
from effective e
where e.site_code is not null and e.production_date is not null
  and not exists (select 1 from model_scopes m
                  where m.site_code = e.site_code and m.production_day = e.production_date)
"""


class GateIncomplete(RuntimeError):
    """A gate check step did not complete for the run: the gate must not pass."""


def scope_hashes_sql(message_type: str) -> str:
    """SQL (parameter `type`) giving site_code, production_day, row_count, content_hash."""
    return SCOPE_HASHES_SQL.format(model=MESSAGE_MODELS[message_type],
                                   effective=EFFECTIVE_POSTINGS_SQL)


def scope_hashes(conn, message_type: str) -> dict[tuple, tuple[int, str]]:
    return {(site, day): (count, digest) for site, day, count, digest in conn.execute(
        scope_hashes_sql(message_type), {"type": message_type})}


@contextmanager
def publish_models_locked(conn):
    """Hold the publish-models lock (session level) on `conn` for the block."""
    conn.execute("select pg_advisory_lock(%s)", (PUBLISH_MODELS_LOCK,))
    conn.commit()
    try:
        yield
    finally:
        conn.rollback()
        conn.execute("select pg_advisory_unlock(%s)", (PUBLISH_MODELS_LOCK,))
        conn.commit()


def record_checked(conn, run_id: str, hashes: dict[str, dict[tuple, tuple[int, str]]]) -> int:
    """Write what the gate checked (per type and scope) for `run_id`; returns rows written.
    Part of the caller's transaction."""
    rows = [(run_id, message_type, site, day, count, digest)
            for message_type, scopes in hashes.items()
            for (site, day), (count, digest) in scopes.items()]
    conn.execute("delete from dq.checked_publish where run_id = %s", (run_id,))
    with conn.cursor() as cursor:
        cursor.executemany(
            "insert into dq.checked_publish (run_id, message_type, site_code, production_day, "
            "row_count, content_hash) values (%s, %s, %s, %s, %s, %s)", rows)
    return len(rows)


def step_done(conn, run_id: str, step: str, detail: dict | None = None) -> None:
    """Record that a gate check step completed for `run_id` (part of the caller's transaction)."""
    from psycopg.types.json import Jsonb

    conn.execute(
        "insert into dq.gate_step (run_id, step, detail) values (%s, %s, %s) "
        "on conflict (run_id, step) do update set completed_at = now(), detail = excluded.detail",
        (run_id, step, Jsonb(detail or {})))


def clear_step(dsn: str, run_id: str, step: str) -> None:
    """A check step starting (again) for `run_id`: forget an earlier completion, so that a
    crash of this attempt cannot pass the gate on the strength of an earlier one."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("delete from dq.gate_step where run_id = %s and step = %s", (run_id, step))


def mark_step_done(dsn: str, run_id: str, step: str, detail: dict | None = None) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        step_done(conn, run_id, step, detail)


def close_gate(dsn: str, run_id: str, required: Iterable[str] = GATE_STEPS) -> None:
    """Pass the gate for `run_id` when every required check step completed; raise
    GateIncomplete (naming the missing steps) otherwise. Old checked content is pruned."""
    import psycopg

    required = list(required)
    with psycopg.connect(dsn) as conn:
        done = {step for (step,) in conn.execute(
            "select step from dq.gate_step where run_id = %s", (run_id,))}
        missing = [step for step in required if step not in done]
        if missing:
            raise GateIncomplete(
                f"gate run {run_id}: check step(s) {', '.join(missing)} did not complete "
                f"(crashed or never ran): the gate stays closed, nothing this run checked is "
                f"published")
        if not conn.execute("select exists (select 1 from dq.checked_publish where run_id = %s)",
                            (run_id,)).fetchone()[0]:
            log.warning("gate run %s recorded no checked publish content", run_id)
        conn.execute(
            "insert into dq.gate_run (run_id, steps) values (%s, %s) on conflict (run_id) "
            "do update set steps = excluded.steps, passed_at = now()", (run_id, required))
        # keep the checked content of the latest passed runs and of every newer run
        conn.execute(
            "delete from dq.checked_publish c where c.checked_at < ("
            "  select min(checked_at) from dq.checked_publish k where k.run_id in ("
            "    select run_id from dq.gate_run order by passed_at desc limit %s))",
            (KEEP_PASSED_RUNS,))


def latest_passed_gate(conn) -> str | None:
    row = conn.execute("select run_id from dq.gate_run order by passed_at desc, run_id desc "
                       "limit 1").fetchone()
    return row[0] if row else None
