"""ERP exactly once when the ERP says no, and only what the gate checked (#12 items 1 and 2).

Fast: a scratch warehouse (ops, dq, the three publish tables filled by the tests — what the
dbt models would hold) and a scratch ERP database with the simulated ERP's real inbound
function (`erp.post_message`, `erp.inbound_faults`). The gate is played by `gate()`: results per
scope in dq.check_result, what it checked (quality.checked.record_checked), the completion of
each check step and `close_gate` — the same calls the dbt/GX steps and `quality_gate` make
(tests/publish runs the real dbt gate on the whole plant).

Every test counts: per confirmation, the ERP's accepted quantities (postings minus reversals)
net to the latest version, and no idempotency key reaches the ERP twice.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from factory_platform import erp_publish
from factory_platform.erp_publish import (
    alerts_for,
    publish_to_erp,
    release_hold,
    write_b2mml,
)
from factory_platform.quality.checked import (
    GATE_STEPS,
    MESSAGE_MODELS,
    PUBLISH_MODELS_LOCK,
    GateIncomplete,
    close_gate,
    mark_step_done,
    publish_models_locked,
    record_checked,
    scope_hashes,
    step_done,
)
from psycopg.types.json import Jsonb

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MATERIAL = "100046"
ORDERS = ("1000001", "1000002", "1000003")
DAY = date(2026, 10, 20)
SITE = "ERF"
TYPE = "production_confirmation"

CONFIRMATION_DDL = """
create table publish.pub_erp__production_confirmation (
    message_type text, business_key text, confirmation_key text, operation_id text,
    order_number text, material_number text, site_code text, line_code text, machine_code text,
    production_date date, shift_code text, started_at timestamptz, ended_at timestamptz,
    good_qty numeric, scrap_qty numeric, rework_qty numeric, uom text, run_seconds bigint,
    erp_payload jsonb, content_hash text)
"""
OTHER_DDL = """
create table publish.{name} (
    message_type text, business_key text, site_code text, production_date date,
    order_number text, erp_payload jsonb, content_hash text)
"""


@pytest.fixture(scope="module")
def dbs(pg, tmp_path_factory):
    """(warehouse, erp) scratch databases; the warehouse has the gate's decision per scope,
    dq.scope_status, as dbt builds it."""
    from factory_platform.dbt_project import run_dbt
    from factory_platform.warehouse import ensure_warehouse
    from plant_sim.systems.erp import INBOUND_SQL

    warehouse = pg.create_database("faults_publish_wh")
    ensure_warehouse(warehouse)
    with psycopg.connect(warehouse) as conn:
        conn.execute(CONFIRMATION_DDL)
        for name in ("pub_erp__goods_movement", "pub_erp__quality_result"):
            conn.execute(OTHER_DDL.format(name=name))
    done = run_dbt(warehouse, "run", "--select", "scope_status",
                   target_path=str(tmp_path_factory.mktemp("dbt-scope-status")))
    assert done.returncode == 0, done.stdout[-4000:]
    erp = pg.create_database("faults_publish_erp")
    with psycopg.connect(erp) as conn:
        conn.execute("create schema erp")
        conn.execute("create table erp.materials (material_number text primary key)")
        conn.execute("create table erp.production_orders (order_number text primary key)")
        conn.execute("insert into erp.materials values (%s)", (MATERIAL,))
        for order in ORDERS:
            conn.execute("insert into erp.production_orders values (%s)", (order,))
        conn.execute(INBOUND_SQL)
    return warehouse, erp


@pytest.fixture()
def wh(dbs):
    """A clean slate per test: nothing published, nothing gated, an ERP that received nothing."""
    warehouse, erp = dbs
    with psycopg.connect(warehouse) as conn:
        conn.execute("truncate ops.erp_outbox, ops.erp_hold, dq.check_result, dq.gate_step, "
                     "dq.gate_run, dq.checked_publish restart identity")
        for model in MESSAGE_MODELS.values():
            conn.execute(f"truncate {model}")
    with psycopg.connect(erp) as conn:
        conn.execute("truncate erp.inbound_postings, erp.inbound_faults restart identity")
    return warehouse


@pytest.fixture()
def erp(dbs):
    return dbs[1]


# --- the plant side: what the publish model holds, what the gate says -------------------------

def row(key: str, good: int, *, order: str = ORDERS[0], day: date = DAY, scrap: int = 0,
        site: str = SITE) -> dict:
    return {"key": key, "good": good, "order": order, "day": day, "scrap": scrap, "site": site}


def set_confirmations(dsn: str, rows: list[dict]) -> None:
    """Rewrite the publish model as a transform does (its dbt pre-hook takes the same lock)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("select pg_advisory_xact_lock(%s)", (PUBLISH_MODELS_LOCK,))
        conn.execute("delete from publish.pub_erp__production_confirmation")
        for r in rows:
            started = datetime.combine(r["day"] or DAY, datetime.min.time(), UTC) + timedelta(
                hours=6)
            payload = {"confirmation_id": r["key"], "operation_id": f"OP-{r['key']}",
                       "order_number": r["order"], "material_number": MATERIAL,
                       "machine_code": "ERF-L1-M01", "yield_qty": r["good"],
                       "scrap_qty": r["scrap"], "rework_qty": 0, "unit": "PCE",
                       "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "ended_at": (started + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
            conn.execute(
                "insert into publish.pub_erp__production_confirmation values ("
                "'production_confirmation', %(key)s, %(key)s, %(op)s, %(order)s, %(material)s, "
                "%(site)s, 'ERF-L1', 'ERF-L1-M01', %(day)s, 'A', %(start)s, %(end)s, %(good)s, "
                "%(scrap)s, 0, 'PCE', 3600, %(payload)s, md5(%(payload)s::jsonb::text))",
                {**r, "op": payload["operation_id"], "material": MATERIAL, "start": started,
                 "end": started + timedelta(hours=1), "payload": Jsonb(payload)})


def gate(dsn: str, run_id: str, *, blocked=(), flagged=(), crash_step: str | None = None):
    """The gate of a transform run, as transform_dbt's check steps and quality_gate record it:
    per scope of the publish models (and of effective postings) an error and a warning check
    (failing in `blocked` / `flagged` scopes), what was checked, each step's completion, then
    close_gate — which raises GateIncomplete when `crash_step` crashed."""
    with psycopg.connect(dsn) as conn, publish_models_locked(conn):
        hashes = {t: scope_hashes(conn, t) for t in MESSAGE_MODELS}
        scopes = sorted({scope for by_scope in hashes.values() for scope in by_scope})
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into dq.check_result (run_id, check_name, check_kind, source_system, "
                "target, severity, site_code, production_day, failing_count) "
                "values (%s, %s, 'dbt', 'publish', 'publish', %s, %s, %s, %s)",
                [(run_id, name, severity, site, day, int((site, day) in failing))
                 for site, day in scopes
                 for name, severity, failing in (("gate_error", "error", blocked),
                                                 ("gate_warn", "warn", flagged))])
        record_checked(conn, run_id, hashes)
        if crash_step != "dbt_gate":
            step_done(conn, run_id, "dbt_gate")
        conn.commit()
    if crash_step != "gx_gate":
        mark_step_done(dsn, run_id, "gx_gate")
    close_gate(dsn, run_id)


def publish(dsn: str, erp_dsn: str, run_id: str, **kwargs):
    return {r.message_type: r for r in publish_to_erp(dsn, erp_dsn, run_id, **kwargs)}[TYPE]


# --- the ERP side: what it booked ------------------------------------------------------------

def erp_rows(erp_dsn: str) -> list[tuple]:
    with psycopg.connect(erp_dsn) as conn:
        return conn.execute("select idempotency_key, status, reversal_of from "
                            "erp.inbound_postings order by posting_id").fetchall()


def erp_net(erp_dsn: str) -> dict[str, Decimal]:
    """Per confirmation: accepted yield of postings minus that of accepted reversals."""
    with psycopg.connect(erp_dsn) as conn:
        return dict(conn.execute(
            "select payload ->> 'confirmation_id', sum((payload ->> 'yield_qty')::numeric "
            "  * case when reversal_of is null then 1 else -1 end) "
            "from erp.inbound_postings where status = 'accepted' "
            "and message_type = 'production_confirmation' group by 1").fetchall())


def assert_exactly_once(erp_dsn: str, latest: dict[str, int]) -> None:
    """Per confirmation the ERP nets to the latest version (0 for a vanished one); no key twice."""
    keys = [key for key, _, _ in erp_rows(erp_dsn)]
    assert len(keys) == len(set(keys))
    net = erp_net(erp_dsn)
    assert set(net) <= set(latest)
    assert {key: qty for key, qty in net.items() if qty} == {
        key: Decimal(qty) for key, qty in latest.items() if qty}


def outbox(dsn: str, key: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select idempotency_key, state, rejection_class from ops.erp_outbox "
                            "where business_key = %s order by outbox_id", (key,)).fetchall()


def open_holds(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("select business_key, kind from ops.erp_hold "
                                 "where released_at is null").fetchall())


def fault(erp_dsn: str, code: str, **match) -> None:
    columns = ["reason_code", *match]
    with psycopg.connect(erp_dsn) as conn:
        conn.execute(f"insert into erp.inbound_faults ({', '.join(columns)}) "
                     f"values ({', '.join(['%s'] * len(columns))})", [code, *match.values()])


def clear_faults(erp_dsn: str) -> None:
    with psycopg.connect(erp_dsn) as conn:
        conn.execute("delete from erp.inbound_faults")


def backoff_passes(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("update ops.erp_outbox set next_attempt_at = now() "
                     "where next_attempt_at is not null")


# --- the simulated ERP says no on purpose ----------------------------------------------------

def test_the_erp_rejects_transiently_and_permanently_on_purpose(erp):
    def post(key: str, order: str = ORDERS[0], **extra):
        payload = {"order_number": order, "material_number": MATERIAL, "yield_qty": 1, **extra}
        with psycopg.connect(erp, autocommit=True) as conn:
            return conn.execute("select status, reason, reason_code from "
                                "erp.post_message(%s, 'production_confirmation', %s)",
                                (key, Jsonb(payload))).fetchone()

    fault(erp, "TRANSIENT_BUSY", message_type=TYPE, remaining=2)
    assert post("k1")[::2] == ("rejected", "TRANSIENT_BUSY")
    assert post("k1")[::2] == ("rejected", "TRANSIENT_BUSY")  # the key was not used up
    assert post("k1") == ("accepted", None, None)  # the fault's 2 messages are spent
    fault(erp, "TRANSIENT_ORDER_NOT_YET_KNOWN", order_number=ORDERS[1],
          active_until=datetime.now(UTC) + timedelta(hours=1), note="order not yet known")
    assert post("k2", ORDERS[1]) == ("rejected", "order not yet known",
                                     "TRANSIENT_ORDER_NOT_YET_KNOWN")
    assert post("k3", ORDERS[2])[0] == "accepted"  # other orders pass
    fault(erp, "PERMANENT_PERIOD_CLOSED", key_like="%:reversal%")
    assert post("k1:reversal", reversal_of="k1")[::2] == ("rejected", "PERMANENT_PERIOD_CLOSED")
    assert post("k1:reversal", reversal_of="k1")[::2] == ("duplicate",
                                                          "PERMANENT_ALREADY_REJECTED")
    assert post("k4", "9999999") == ("rejected", "unknown order_number 9999999",
                                     "PERMANENT_UNKNOWN_ORDER")
    fault(erp, "TRANSIENT_EXPIRED", active_until=datetime.now(UTC) - timedelta(seconds=1))
    assert post("k5", ORDERS[2])[0] == "accepted"
    # transient rejections are not stored; permanent ones are, as every other rejection
    assert erp_rows(erp) == [("k1", "accepted", None), ("k3", "accepted", None),
                             ("k1:reversal", "rejected", "k1"), ("k4", "rejected", None),
                             ("k5", "accepted", None)]
    with psycopg.connect(erp) as conn:
        hits = conn.execute("select reason_code, hits, remaining from erp.inbound_faults "
                            "order by fault_id").fetchall()
    assert hits == [("TRANSIENT_BUSY", 2, 0), ("TRANSIENT_ORDER_NOT_YET_KNOWN", 1, None),
                    ("PERMANENT_PERIOD_CLOSED", 1, None), ("TRANSIENT_EXPIRED", 0, None)]


# --- item 1: exactly once when the ERP says no -----------------------------------------------

def test_a_rejected_reversal_holds_the_key_and_its_new_version_is_never_posted(wh, erp):
    """Before: v2 was posted although the reversal of v1 was rejected — 22 pieces booked for
    one confirmation of 11. Now v2 waits for its reversal; a permanent rejection holds the
    key, cancels v2 and alerts; after a human releases it, the key nets to its latest version."""
    set_confirmations(wh, [row("C-1", 11), row("C-2", 5)])
    gate(wh, "g1")
    assert publish(wh, erp, "p1").answers == {"accepted": 2}
    set_confirmations(wh, [row("C-1", 12), row("C-2", 5)])
    gate(wh, "g2")
    fault(erp, "PERMANENT_PERIOD_CLOSED", key_like="%:reversal%")
    result = publish(wh, erp, "p2")
    assert (result.planned_reversals, result.planned_postings) == (1, 1)
    assert dict(result.answers) == {"rejected": 1} and result.cancelled == 1
    assert outbox(wh, "C-1") == [
        ("production_confirmation:C-1:v1", "accepted", None),
        ("production_confirmation:C-1:v1:reversal", "rejected", "permanent"),
        ("production_confirmation:C-1:v2", "cancelled", None)]
    assert erp_net(erp) == {"C-1": 11, "C-2": 5}  # not 23: v2 never reached the ERP
    assert open_holds(wh) == {"C-1": "erp_rejected"}
    titles = [title for title, text in alerts_for([result.as_dict()]) if "C-1" in text]
    assert len(titles) == 1 and "held" in titles[0]

    set_confirmations(wh, [row("C-1", 13), row("C-2", 5)])  # held: nothing more for C-1
    gate(wh, "g3")
    clear_faults(erp)
    result = publish(wh, erp, "p3")
    assert (result.planned_reversals, result.planned_postings, result.actions["held"]) == (0, 0, 1)
    assert erp_net(erp) == {"C-1": 11, "C-2": 5}

    assert release_hold(wh, TYPE, "C-1", "test", "period reopened") == 1
    result = publish(wh, erp, "p4")
    assert dict(result.answers) == {"accepted": 2}
    assert [key for key, _, _ in outbox(wh, "C-1")][-2:] == [
        "production_confirmation:C-1:v1:reversal-2", "production_confirmation:C-1:v3"]
    assert_exactly_once(erp, {"C-1": 13, "C-2": 5})
    assert open_holds(wh) == {}


def test_a_human_lists_and_releases_holds_from_the_command_line(wh, erp, monkeypatch, capsys):
    from factory_platform import warehouse

    set_confirmations(wh, [row("C-1", 11)])
    gate(wh, "g1")
    fault(erp, "PERMANENT_ORDER_BLOCKED", note="order blocked for confirmations")
    publish(wh, erp, "p1")
    monkeypatch.setattr(warehouse, "env_dsn", lambda: wh)
    assert erp_publish.main(["holds"]) == 0
    listed = capsys.readouterr().out
    assert "C-1\terp_rejected" in listed and "order blocked for confirmations" in listed
    assert erp_publish.main(["release", TYPE, "C-1", "--by", "operator",
                             "--note", "order released in the ERP"]) == 0
    assert erp_publish.main(["release", TYPE, "C-1", "--by", "operator"]) == 1  # not held
    with psycopg.connect(wh) as conn:
        assert conn.execute("select released_by, release_note from ops.erp_hold").fetchall() == [
            ("operator", "order released in the ERP")]
    clear_faults(erp)
    publish(wh, erp, "p2")  # v1 was rejected: the key posts v2
    assert [key for key, _, _ in outbox(wh, "C-1")] == [
        "production_confirmation:C-1:v1", "production_confirmation:C-1:v2"]
    assert_exactly_once(erp, {"C-1": 11})


def test_a_transient_rejection_is_retried_with_backoff_and_shown_as_pending(wh, erp):
    """Before: "order not yet known" was final and the task stayed green with a log line. Now
    the row stays pending, is not resent before its backoff, goes once the ERP knows the order."""
    set_confirmations(wh, [row("C-1", 11), row("C-2", 7, order=ORDERS[1]), row("C-3", 3)])
    gate(wh, "g1")
    fault(erp, "TRANSIENT_ORDER_NOT_YET_KNOWN", order_number=ORDERS[1])
    result = publish(wh, erp, "p1")
    assert dict(result.answers) == {"accepted": 2, "rejected": 1}
    assert len(result.retrying) == 1 and "C-2" in result.retrying[0]
    assert outbox(wh, "C-2") == [("production_confirmation:C-2:v1", "pending", "transient")]
    with psycopg.connect(wh) as conn:
        wait = conn.execute("select next_attempt_at - answered_at from ops.erp_outbox "
                            "where business_key = 'C-2'").fetchone()[0]
    assert timedelta(minutes=4) < wait <= timedelta(minutes=5, seconds=1)

    result = publish(wh, erp, "p2")  # within the backoff: not sent again
    assert (result.resent, result.waiting, dict(result.answers)) == (0, 1, {})
    for attempt, minutes in ((2, 10), (3, 20)):  # the ERP still does not know the order
        backoff_passes(wh)
        result = publish(wh, erp, f"p-retry-{attempt}")
        assert dict(result.answers) == {"rejected": 1}
        with psycopg.connect(wh) as conn:
            attempts, wait = conn.execute(
                "select attempts, next_attempt_at - answered_at from ops.erp_outbox "
                "where business_key = 'C-2'").fetchone()
        assert attempts == attempt
        assert timedelta(minutes=minutes - 1) < wait <= timedelta(minutes=minutes, seconds=1)

    clear_faults(erp)  # the ERP knows the order now
    backoff_passes(wh)
    result = publish(wh, erp, "p3")
    assert (result.resent, dict(result.answers)) == (1, {"accepted": 1})
    assert outbox(wh, "C-2") == [("production_confirmation:C-2:v1", "accepted", None)]
    assert_exactly_once(erp, {"C-1": 11, "C-2": 7, "C-3": 3})


def test_a_row_rejected_transiently_again_and_again_is_alerted_and_still_retried(wh, erp,
                                                                                monkeypatch):
    monkeypatch.setattr(erp_publish, "ALERT_AFTER_ATTEMPTS", 2)
    set_confirmations(wh, [row("C-1", 11)])
    gate(wh, "g1")
    fault(erp, "TRANSIENT_BUSY")
    assert publish(wh, erp, "p1", retry_backoff=timedelta(0)).stuck == []
    result = publish(wh, erp, "p2", retry_backoff=timedelta(0))
    assert len(result.stuck) == 1
    assert any("transiently" in title for title, _ in alerts_for([result.as_dict()]))
    clear_faults(erp)
    publish(wh, erp, "p3", retry_backoff=timedelta(0))
    assert_exactly_once(erp, {"C-1": 11})


def test_a_transiently_rejected_reversal_delays_its_new_version(wh, erp):
    set_confirmations(wh, [row("C-1", 11)])
    gate(wh, "g1")
    publish(wh, erp, "p1")
    set_confirmations(wh, [row("C-1", 10)])
    gate(wh, "g2")
    fault(erp, "TRANSIENT_LOCKED", key_like="%:reversal%", remaining=1)
    result = publish(wh, erp, "p2")
    assert dict(result.answers) == {"rejected": 1} and result.waiting == 1
    assert [state for _, state, _ in outbox(wh, "C-1")] == ["accepted", "pending", "pending"]
    assert erp_net(erp) == {"C-1": 11}  # v2 did not go before its reversal
    backoff_passes(wh)
    result = publish(wh, erp, "p3")
    assert (result.resent, dict(result.answers)) == (2, {"accepted": 2})
    assert_exactly_once(erp, {"C-1": 10})


def reconciliation(dsn: str, erp_dsn: str) -> list[tuple]:
    """marts.mart_erp_reconciliation's own SQL (refs and sources resolved by hand: a dbt run
    would spend ~30 s parsing the project; tests/publish builds the mart with dbt), over the
    ERP's inbound table read back as stg_erp__inbound_postings has it."""
    import re

    with psycopg.connect(erp_dsn) as conn:
        inbound = conn.execute("select idempotency_key, message_type, payload, status, "
                               "reversal_of from erp.inbound_postings").fetchall()
    text = (PROJECT_ROOT / "dbt_project/models/marts/erp/mart_erp_reconciliation.sql").read_text()
    text = re.sub(r"\{#-.*?-#\}", "", text, flags=re.DOTALL)
    text = text.replace("{{ ref('pub_erp__production_confirmation') }}",
                        "publish.pub_erp__production_confirmation")
    text = text.replace("{{ ref('stg_erp__inbound_postings') }}", "erp_inbound")
    text = re.sub(r"\{\{ source\('(\w+)', '(\w+)'\) \}\}", r"\1.\2", text)
    assert "{" not in text.replace("'{}'", "")
    with psycopg.connect(dsn) as conn:
        conn.execute("create temporary table erp_inbound (idempotency_key text, "
                     "message_type text, payload jsonb, posting_status text, reversal_of text)")
        with conn.cursor() as cursor:
            cursor.executemany("insert into erp_inbound values (%s, %s, %s, %s, %s)",
                               [(k, t, Jsonb(p), s, r) for k, t, p, s, r in inbound])
        return conn.execute(
            f"select order_number, published_good_qty, erp_good_qty, pending_confirmations, "
            f"retrying_confirmations, rejected_confirmations, held_confirmations, "
            f"frozen_confirmations, is_reconciled from ({text}) r order by 1").fetchall()


def test_a_permanently_rejected_posting_holds_the_key_and_shows_in_the_reconciliation(wh, erp):
    set_confirmations(wh, [row("C-1", 11), row("C-2", 4, order=ORDERS[1]),
                           row("C-3", 2, order=ORDERS[2])])
    gate(wh, "g1")
    fault(erp, "PERMANENT_ORDER_CLOSED", order_number=ORDERS[1])
    fault(erp, "TRANSIENT_BUSY", order_number=ORDERS[2])
    result = publish(wh, erp, "p1")
    assert dict(result.answers) == {"accepted": 1, "rejected": 2}
    assert len(result.held) == 1 and "PERMANENT_ORDER_CLOSED" in result.held[0]
    assert open_holds(wh) == {"C-2": "erp_rejected"}
    set_confirmations(wh, [row("C-1", 11), row("C-2", 5, order=ORDERS[1]),
                           row("C-3", 2, order=ORDERS[2])])
    gate(wh, "g2")
    result = publish(wh, erp, "p2")
    assert (result.planned_postings, result.actions["held"]) == (0, 1)
    assert_exactly_once(erp, {"C-1": 11})
    # order: published, ERP, pending, retrying, rejected, held, frozen, reconciled
    assert reconciliation(wh, erp) == [(ORDERS[0], 11, 11, 0, 0, 0, 0, 0, True),
                                       (ORDERS[1], 0, 0, 0, 0, 1, 1, 0, False),
                                       (ORDERS[2], 0, 0, 1, 1, 0, 0, 0, False)]


def test_a_vanished_key_is_reversed(wh, erp):
    set_confirmations(wh, [row("C-1", 11), row("C-2", 5), row("C-3", 2, day=DAY + timedelta(1))])
    gate(wh, "g1")
    publish(wh, erp, "p1")
    set_confirmations(wh, [row("C-1", 11)])  # C-2 gone from its day, C-3's day is empty now
    result = publish(wh, erp, "p2")  # not checked yet: nothing happens
    assert (result.planned_reversals, result.actions["unchecked"]) == (0, 2)
    gate(wh, "g2")
    result = publish(wh, erp, "p3")
    assert (result.planned_reversals, result.planned_postings) == (2, 0)
    assert result.actions["vanished"] == 2
    assert_exactly_once(erp, {"C-1": 11, "C-2": 0, "C-3": 0})
    assert publish(wh, erp, "p4").planned_reversals == 0


def test_many_keys_vanishing_at_once_are_held_not_reversed(wh, erp):
    keys = [f"C-{i}" for i in range(6)]
    set_confirmations(wh, [row(key, 10) for key in keys])
    gate(wh, "g1")
    publish(wh, erp, "p1")
    set_confirmations(wh, [row(key, 10) for key in keys[:2]])  # a broken model?
    gate(wh, "g2")
    result = publish(wh, erp, "p2", max_vanished=3)
    assert (result.planned_reversals, len(result.vanish_guarded)) == (0, 4)
    assert any("vanished" in title for title, _ in alerts_for([result.as_dict()]))
    assert set(open_holds(wh).values()) == {"vanished_bulk"}
    assert_exactly_once(erp, dict.fromkeys(keys, 10))

    set_confirmations(wh, [row(key, 10) for key in keys[:4]])  # two were a glitch: back
    gate(wh, "g3")
    result = publish(wh, erp, "p3", max_vanished=3)
    assert sorted(result.released) == ["C-2", "C-3"] and result.planned_reversals == 0
    assert release_hold(wh, TYPE, "C-4", "test", "really gone") == 1
    result = publish(wh, erp, "p4", max_vanished=3)
    assert result.planned_reversals == 1
    assert_exactly_once(erp, {**dict.fromkeys(keys[:4], 10), "C-4": 0, "C-5": 10})


def test_a_scope_blocked_after_posting_keeps_its_postings_and_holds_its_keys(wh, erp):
    """The rule: a posted key whose scope is blocked now is not reversed (it was checked when
    posted); it is held and alerted, and released once the scope passes again."""
    other = DAY + timedelta(days=1)
    set_confirmations(wh, [row("C-1", 11), row("C-2", 5), row("C-3", 4, day=other)])
    gate(wh, "g1")
    publish(wh, erp, "p1")
    set_confirmations(wh, [row("C-1", 12), row("C-3", 6, day=other)])  # C-2 vanished too
    gate(wh, "g2", blocked=[(SITE, DAY)])
    result = publish(wh, erp, "p2")
    assert (result.planned_reversals, result.planned_postings) == (1, 1)  # C-3, other day
    assert sorted(result.frozen) == ["C-1", "C-2"]
    assert result.blocked_scopes == [(SITE, str(DAY), ["gate_error"])]
    assert any("blocked after" in title for title, _ in alerts_for([result.as_dict()]))
    assert open_holds(wh) == {"C-1": "scope_blocked", "C-2": "scope_blocked"}
    assert_exactly_once(erp, {"C-1": 11, "C-2": 5, "C-3": 6})
    assert reconciliation(wh, erp) == [(ORDERS[0], 22, 22, 0, 0, 0, 0, 2, False)]
    assert publish(wh, erp, "p3").planned_postings == 0  # still blocked: nothing

    gate(wh, "g3")  # fixed
    result = publish(wh, erp, "p4")
    assert sorted(result.released) == ["C-1", "C-2"]
    assert (result.planned_reversals, result.planned_postings) == (2, 1)
    assert_exactly_once(erp, {"C-1": 12, "C-2": 0, "C-3": 6})
    assert open_holds(wh) == {}


def test_a_double_booking_of_the_old_publisher_is_reversed(wh, erp):
    """Outboxes written before this fix may hold v1 and v2 both effective (the reversal of v1
    rejected, v2 posted anyway): the next run reverses v1, the ERP nets to v2."""
    set_confirmations(wh, [row("C-1", 12)])
    gate(wh, "g1")
    with psycopg.connect(erp, autocommit=True) as e, psycopg.connect(wh) as w:
        for version, qty in ((1, 11), (2, 12)):
            key = f"production_confirmation:C-1:v{version}"
            payload = {"confirmation_id": "C-1", "order_number": ORDERS[0],
                       "material_number": MATERIAL, "yield_qty": qty}
            e.execute("select erp.post_message(%s, %s, %s)", (key, TYPE, Jsonb(payload)))
            w.execute("insert into ops.erp_outbox (idempotency_key, message_type, business_key, "
                      "version, kind, content_hash, payload, site_code, production_date, "
                      "order_number, state, b2mml_due) values (%s, %s, 'C-1', %s, 'posting', "
                      "(select content_hash from publish.pub_erp__production_confirmation), "
                      "%s, %s, %s, %s, 'accepted', false)",
                      (key, TYPE, version, Jsonb(payload), SITE, DAY, ORDERS[0]))
    assert erp_net(erp) == {"C-1": 23}
    result = publish(wh, erp, "p1")
    assert (result.planned_reversals, result.actions["double_booking"]) == (1, 1)
    assert dict(result.answers) == {"accepted": 1}
    assert_exactly_once(erp, {"C-1": 12})


# --- item 2: publish what was checked --------------------------------------------------------

def test_rows_added_after_the_gate_wait_for_the_next_gate(wh, erp):
    """Before: rows added after the gate ran were posted under its "passed", without the flag.
    Now a scope is posted only while its rows hash to what the gate checked."""
    set_confirmations(wh, [row("C-1", 11), row("C-2", 5)])
    gate(wh, "g1")
    later = DAY + timedelta(days=1)
    set_confirmations(wh, [row("C-1", 11), row("C-2", 5), row("C-3", 1, scrap=9),  # suspicious
                           row("C-4", 8, day=later)])  # and a scope the gate never saw
    result = publish(wh, erp, "p1")
    assert (result.planned_postings, result.actions["unchecked"]) == (0, 4)
    assert erp_rows(erp) == []
    gate(wh, "g2", flagged=[(SITE, DAY)])
    result = publish(wh, erp, "p2")
    assert result.planned_postings == 4
    with psycopg.connect(wh) as conn:
        flags = dict(conn.execute("select business_key, dq_flagged from ops.erp_outbox"))
        gates = {g for (g,) in conn.execute("select distinct gate_run_id from ops.erp_outbox")}
    assert flags == {"C-1": True, "C-2": True, "C-3": True, "C-4": False} and gates == {"g2"}
    assert_exactly_once(erp, {"C-1": 11, "C-2": 5, "C-3": 1, "C-4": 8})


def test_a_row_without_a_scope_is_never_posted(wh, erp):
    set_confirmations(wh, [row("C-1", 11), row("C-2", 5, day=None)])
    gate(wh, "g1")
    result = publish(wh, erp, "p1")
    assert (result.planned_postings, result.actions["unscoped"]) == (1, 1)
    assert "unchecked" not in result.actions
    assert_exactly_once(erp, {"C-1": 11})


def test_transform_and_publish_never_overlap(wh, erp):
    """A race: a transform rewrites the publish model (changing one row, adding one) while
    publish_erp runs. The rewrite holds the publish-models lock as dbt's pre-hook does, so the
    publisher waits for its commit and then finds content the gate never checked: it posts
    nothing of it. The other way round, the rewrite waits until publishing is done."""
    set_confirmations(wh, [row("C-1", 11), row("C-2", 5)])
    gate(wh, "g1")
    publish(wh, erp, "p1")
    set_confirmations(wh, [row("C-1", 12), row("C-2", 5), row("C-3", 3)])
    gate(wh, "g2")
    times: dict[str, float] = {}
    locked = threading.Event()

    def transform():
        with psycopg.connect(wh) as conn:
            conn.execute("select pg_advisory_xact_lock(%s)", (PUBLISH_MODELS_LOCK,))
            locked.set()
            conn.execute("update publish.pub_erp__production_confirmation "
                         "set content_hash = md5(content_hash), erp_payload = erp_payload "
                         "|| '{\"yield_qty\": 99}' where business_key in ('C-1', 'C-3')")
            time.sleep(1.0)
            times["transform_commit"] = time.monotonic()

    thread = threading.Thread(target=transform)
    thread.start()
    locked.wait(5)
    result = publish(wh, erp, "p2")
    times["publish_done"] = time.monotonic()
    thread.join()
    assert times["publish_done"] > times["transform_commit"]  # it waited
    assert (result.planned_postings, result.planned_reversals) == (0, 0)
    assert result.actions["unchecked"] == 2  # C-1 (changed), C-3 (new): the gate saw others
    assert_exactly_once(erp, {"C-1": 11, "C-2": 5})

    # the other way round: publishing holds the lock, a rewrite waits for it
    gate(wh, "g3")
    started = threading.Event()
    real_send = erp_publish._send_pending

    def slow_send(*args, **kwargs):
        started.set()
        time.sleep(0.5)
        return real_send(*args, **kwargs)

    erp_publish._send_pending = slow_send
    try:
        publisher = threading.Thread(target=publish, args=(wh, erp, "p3"))
        publisher.start()
        started.wait(5)
        waited = time.monotonic()
        set_confirmations(wh, [row("C-1", 1)])  # blocks until the publisher releases the lock
        waited = time.monotonic() - waited
        publisher.join()
    finally:
        erp_publish._send_pending = real_send
    assert waited > 0.5  # at least the rest of the publish (3 types × 2 sends × 0.5 s)
    assert_exactly_once(erp, {"C-1": 99, "C-2": 5, "C-3": 99})


def test_the_dbt_publish_models_take_the_same_lock():
    """The lock the tests above take is the one the publish models' dbt pre-hook takes."""
    import yaml

    macro = (PROJECT_ROOT / "dbt_project/macros/publish/publish_models_lock.sql").read_text()
    assert f"pg_advisory_xact_lock({PUBLISH_MODELS_LOCK})" in macro
    models = yaml.safe_load((PROJECT_ROOT / "dbt_project/models/publish/erp/"
                             "_publish_erp__models.yml").read_text())["models"]
    assert {m["name"]: m["config"]["pre_hook"] for m in models} == {
        model.split(".")[1]: "{{ publish_models_lock() }}" for model in MESSAGE_MODELS.values()}


def test_a_crash_of_a_check_step_keeps_the_gate_closed(wh, erp, monkeypatch):
    """Before: an exception in the Great Expectations step (not a failed expectation) let the
    gate pass. Now every step records its completion and quality_gate requires all of them."""
    from factory_platform.quality import gx_suites

    set_confirmations(wh, [row("C-1", 11)])
    gate(wh, "g1")
    publish(wh, erp, "p1")
    set_confirmations(wh, [row("C-1", 12), row("C-2", 5)])

    def crash(*args, **kwargs):
        raise RuntimeError("GX could not evaluate a suite")

    monkeypatch.setattr(gx_suites, "run_suites", crash)
    mark_step_done(wh, "g2", "gx_gate")  # an earlier attempt of the same run completed …
    with pytest.raises(RuntimeError, match="could not evaluate"):  # … this one crashes
        gx_suites.gx_quality_gate(wh, "g2", datetime(2026, 10, 20, tzinfo=UTC),
                                  datetime(2026, 10, 21, tzinfo=UTC))
    with pytest.raises(GateIncomplete, match="gx_gate"):
        gate(wh, "g2", crash_step="gx_gate")
    with psycopg.connect(wh) as conn:
        assert conn.execute("select count(*) from dq.gate_run where run_id = 'g2'").fetchone() == (0,)
    result = publish(wh, erp, "p2")  # g1 is still the latest passed gate: nothing new
    assert (result.gate_run_id, result.planned_postings, result.planned_reversals) == ("g1", 0, 0)
    assert_exactly_once(erp, {"C-1": 11})
    with pytest.raises(GateIncomplete, match="dbt_gate"):
        gate(wh, "g3", crash_step="dbt_gate")
    gate(wh, "g4")
    result = publish(wh, erp, "p3")
    assert (result.planned_reversals, result.planned_postings) == (1, 2)
    assert_exactly_once(erp, {"C-1": 12, "C-2": 5})
    assert set(GATE_STEPS) == {"dbt_gate", "gx_gate"}


# --- B2MML: every accepted posting exactly once ----------------------------------------------

def b2mml_postings(out_dir: Path) -> list[tuple[str, int]]:
    """(confirmation key, posting version) of every SegmentResponse in every document."""
    from lxml import etree

    ns = {"b": "http://www.mesa.org/xml/B2MML"}
    found = []
    for document in sorted(out_dir.rglob("*.xml")):
        tree = etree.parse(str(document))
        for segment in tree.iterfind(".//b:SegmentResponse", ns):
            version = segment.xpath("b:SegmentData[b:ID='posting_version']/b:Value/b:ValueString",
                                    namespaces=ns)[0].text
            found.append((segment.findtext("b:ID", namespaces=ns), int(version)))
    return sorted(found)


def accepted_postings(dsn: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        return sorted(conn.execute(
            "select business_key, version from ops.erp_outbox where kind = 'posting' "
            "and state = 'accepted' and message_type = 'production_confirmation'").fetchall())


def test_b2mml_covers_every_accepted_posting_once_also_after_a_failed_run(wh, erp, tmp_path,
                                                                          monkeypatch):
    """Before: confirmations re-sent by the run after a failed one were in no B2MML document.
    Now every accepted posting is written by the first run after its acceptance, once."""
    set_confirmations(wh, [row(f"C-{i}", 10 + i) for i in range(4)])
    gate(wh, "g1")
    record = erp_publish._record_answer
    calls = []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise ConnectionResetError("worker lost between sending and recording")
        return record(*args, **kwargs)

    monkeypatch.setattr(erp_publish, "_record_answer", crash_on_third)
    with pytest.raises(ConnectionResetError):
        publish(wh, erp, "p1")  # the run fails: its B2MML task never runs
    monkeypatch.setattr(erp_publish, "_record_answer", record)
    result = publish(wh, erp, "p2")
    assert (result.resent, dict(result.answers)) == (2, {"duplicate": 1, "accepted": 1})
    paths = write_b2mml(wh, "p2", tmp_path)
    assert len(paths) == 1
    assert b2mml_postings(tmp_path) == accepted_postings(wh) == [(f"C-{i}", 1) for i in range(4)]
    assert write_b2mml(wh, "p2-again", tmp_path) == []  # nothing new: no second document

    # a correction: v2 of C-0 in the next run's document; v1 stays in the first one
    set_confirmations(wh, [row("C-0", 1)] + [row(f"C-{i}", 10 + i) for i in range(1, 4)])
    gate(wh, "g2")
    publish(wh, erp, "p3")
    assert len(write_b2mml(wh, "p3", tmp_path)) == 1
    # a run that crashed after writing its documents but before marking its postings: the
    # next run writes them again and removes the crashed run's document
    set_confirmations(wh, [row("C-0", 1), row("C-1", 2)] + [row(f"C-{i}", 10 + i)
                                                            for i in range(2, 4)])
    gate(wh, "g3")
    publish(wh, erp, "p4")
    real_connect = psycopg.connect
    connects = []

    def crash_on_marking(*args, **kwargs):
        connects.append(1)
        if len(connects) == 2:  # the connection that marks the postings written
            raise psycopg.OperationalError("connection lost")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", crash_on_marking)
    with pytest.raises(psycopg.OperationalError):
        write_b2mml(wh, "p4", tmp_path)
    monkeypatch.setattr(psycopg, "connect", real_connect)
    assert (tmp_path / "p4").exists()
    write_b2mml(wh, "p5", tmp_path)
    assert not list((tmp_path / "p4").glob("*.xml"))
    assert b2mml_postings(tmp_path) == accepted_postings(wh) == sorted(
        [(f"C-{i}", 1) for i in range(4)] + [("C-0", 2), ("C-1", 2)])
    assert_exactly_once(erp, {"C-0": 1, "C-1": 2, "C-2": 12, "C-3": 13})
    with psycopg.connect(wh) as conn:
        assert conn.execute("select count(*) from ops.erp_outbox where kind = 'posting' and "
                            "state = 'accepted' and b2mml_written_at is null").fetchone() == (0,)
    assert json.loads(json.dumps(result.as_dict()))["message_type"] == TYPE


def test_a_retried_publish_run_adds_b2mml_documents_and_never_rewrites_its_first(wh, erp,
                                                                                 tmp_path):
    """Found by `make chaos`: a posting task killed after its B2MML step, retried (same run id),
    accepted more postings of the same site and day — and its second write replaced the first
    document (41 accepted postings in no document). Now each write is a document of its own."""
    set_confirmations(wh, [row(f"C-{i}", 10 + i) for i in range(3)])
    gate(wh, "g1")
    publish(wh, erp, "p1")
    first = write_b2mml(wh, "p1", tmp_path)
    first_bytes = Path(first[0]).read_bytes()
    # the retry of the same run: two more confirmations of the same day were accepted
    set_confirmations(wh, [row(f"C-{i}", 10 + i) for i in range(5)])
    gate(wh, "g2")
    publish(wh, erp, "p1")
    second = write_b2mml(wh, "p1", tmp_path)
    assert len(first) == len(second) == 1 and first != second
    assert Path(first[0]).read_bytes() == first_bytes  # untouched
    assert b2mml_postings(tmp_path) == accepted_postings(wh) == [(f"C-{i}", 1) for i in range(5)]
    assert write_b2mml(wh, "p1", tmp_path) == []
