"""The quality gate per scope and the exactly-once ERP write-back, on the simulated plant.

Every system of the plant is extracted through the real clients, `dbt build` builds every
layer up to the publish models, the gate's dbt tests record per-scope results, and the
publisher posts through the simulated ERP's inbound interface (`erp.post_message`), whose
table `erp.inbound_postings` is the ERP's own record of what arrived. Corrections are made the
way a plant makes them: a new version of a MES confirmation arriving in raw.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from _pipeline import (
    ALL_SYSTEMS,
    build_whole_plant,
    changing_the_build,
    day_windows,
    dbt,
    empty_erp_inbox,
    extract_all,
    rows,
    transform_interval,
)

pytestmark = pytest.mark.slow

PUBLISH_MODELS = ["pub_erp__production_confirmation", "pub_erp__goods_movement",
                  "pub_erp__quality_result"]


@pytest.fixture(scope="module")
def erp_dsn(plant, pg):
    """The simulated ERP as the superuser: the tests post, read and empty its inbound table
    (the platform's roles may only read it, or only post: factory_platform/roles.py)."""
    dsn = pg.cluster.dsn("erp")
    empty_erp_inbox(dsn)
    return dsn


@pytest.fixture(scope="module")
def built(plant, warehouse_dsn):
    """The whole plant extracted and built (as tests/marts has it); this module changes it."""
    dsn = build_whole_plant(plant, warehouse_dsn)
    with changing_the_build(dsn, restored=False):
        yield dsn


def gate(dsn: str, run_id: str):
    """The dbt gate step, then quality_gate's close (this module runs no GX suites)."""
    from factory_platform.quality.checked import close_gate
    from factory_platform.quality.dbt_gate import run_dbt_gate

    checks = {c.name: c for c in run_dbt_gate(dsn, run_id)}
    close_gate(dsn, run_id, required=["dbt_gate"])
    return checks


def publish(dsn: str, erp_dsn: str, run_id: str, types=None):
    from factory_platform.erp_publish import publish_to_erp

    return {r.message_type: r for r in publish_to_erp(dsn, erp_dsn, run_id, types)}


def rebuild_publish_models() -> None:
    dbt("run", "--full-refresh", "--select", "fct_operation_confirmation", *PUBLISH_MODELS)


def correct_confirmation(dsn: str, confirmation_id: str, **changes) -> None:
    """A new version of a MES confirmation arrives in raw (MES corrected it)."""
    sets = ", ".join(f"{column} = %({column})s" for column in changes)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "insert into raw_mes.confirmations select * from raw_mes.confirmations "
            "where confirmation_id = %(id)s order by updated_at desc limit 1",
            {"id": confirmation_id})
        conn.execute(
            f"update raw_mes.confirmations set {sets}, updated_at = updated_at + interval '1 minute' "
            "where ctid = (select ctid from raw_mes.confirmations where confirmation_id = %(id)s "
            "order by updated_at desc, _extracted_at desc limit 1)",
            {"id": confirmation_id, **changes})


def erp_postings(erp_dsn: str) -> list[tuple]:
    return rows(erp_dsn, "select idempotency_key, message_type, status, reversal_of, payload "
                         "from erp.inbound_postings order by posting_id")


def assert_no_duplicate_keys(erp_dsn: str) -> None:
    keys = [r[0] for r in erp_postings(erp_dsn)]
    assert len(keys) == len(set(keys))


def test_gate_records_every_check_for_every_scope(built):
    checks = gate(built, "gate-1")
    scopes = rows(built, "select count(distinct (site_code, production_date)) "
                         "from publish.pub_erp__production_confirmation")[0][0]
    assert scopes >= 3
    assert checks["gate_confirmation_order_known"].scopes == scopes
    recorded = rows(built, "select check_name, count(*) from dq.check_result "
                           "where run_id = 'gate-1' group by 1")
    assert dict(recorded)["gate_confirmation_order_known"] == scopes
    assert len(recorded) == 7  # every gate test of the three publish models


def test_first_publish_posts_every_message_of_the_open_scopes_exactly_once(built, erp_dsn):
    results = publish(built, erp_dsn, "publish-1")
    wanted = rows(built, """
        select m.message_type, count(*) from (
            select message_type, site_code, production_date from publish.pub_erp__production_confirmation
            union all select message_type, site_code, production_date from publish.pub_erp__goods_movement
            union all select message_type, site_code, production_date from publish.pub_erp__quality_result
        ) m join dq.scope_status s on s.site_code = m.site_code and s.production_day = m.production_date
        where s.decision <> 'blocked' group by 1""")
    for message_type, count in wanted:
        assert results[message_type].planned_postings == count
        assert results[message_type].answers["accepted"] == count, results[message_type].as_dict()
    erp = rows(erp_dsn, "select message_type, count(*) from erp.inbound_postings "
                        "where status = 'accepted' group by 1")
    assert dict(erp) == dict(wanted)
    assert_no_duplicate_keys(erp_dsn)


def test_the_same_run_again_posts_nothing(built, erp_dsn):
    before = len(erp_postings(erp_dsn))
    gate(built, "gate-2")
    results = publish(built, erp_dsn, "publish-2")
    assert all(r.planned_postings == 0 and r.planned_reversals == 0 and not r.answers
               for r in results.values()), [r.as_dict() for r in results.values()]
    assert len(erp_postings(erp_dsn)) == before


def test_a_7_day_backfill_over_published_days_posts_nothing(built, erp_dsn, plant):
    """Re-extract 7 published days from every system, rebuild incrementally for that range,
    gate and publish again: the same numbers, so no new message reaches the ERP."""
    before = len(erp_postings(erp_dsn))
    days = day_windows(plant, days_before=0)[3:10]
    for system in ALL_SYSTEMS:
        extract_all(system, days, built)
    start, end = days[0][0], days[-1][1]
    # models only (the data tests run on the whole plant in tests/e2e; the gate runs below)
    with transform_interval(built, start, end):
        dbt("build", "--exclude", "tag:gate", "test_type:data", "--threads", "4")
    gate(built, "gate-backfill")
    results = publish(built, erp_dsn, "publish-backfill")
    assert all(r.planned_postings == 0 and r.planned_reversals == 0 for r in results.values()), [
        r.as_dict() for r in results.values()]
    assert sum(r.unchanged for r in results.values()) > 0
    assert len(erp_postings(erp_dsn)) == before


def test_a_crash_between_sending_and_recording_does_not_post_twice(built, erp_dsn, monkeypatch):
    """The first answer is lost (the worker dies after the ERP accepted); the retry resends
    the pending row with the same key, the ERP answers duplicate, the outbox counts it done."""
    from factory_platform import erp_publish

    confirmation = rows(built, "select business_key from publish.pub_erp__production_confirmation "
                               "order by business_key limit 1")[0][0]
    correct_confirmation(built, confirmation, good_qty=0)
    rebuild_publish_models()
    gate(built, "gate-3")
    record = erp_publish._record_answer

    def crash(*args, **kwargs):
        raise ConnectionResetError("worker lost between sending and recording")

    monkeypatch.setattr(erp_publish, "_record_answer", crash)
    with pytest.raises(ConnectionResetError):
        publish(built, erp_dsn, "publish-3", ["production_confirmation"])
    monkeypatch.setattr(erp_publish, "_record_answer", record)
    pending = rows(built, "select idempotency_key from ops.erp_outbox where state = 'pending' "
                          "order by outbox_id")
    assert [k for (k,) in pending] == [
        f"production_confirmation:{confirmation}:v1:reversal",
        f"production_confirmation:{confirmation}:v2"]
    sent_before_crash = [r for r in erp_postings(erp_dsn) if r[0] == pending[0][0]]
    assert len(sent_before_crash) == 1  # the ERP has the reversal; we never recorded its answer

    results = publish(built, erp_dsn, "publish-3-retry", ["production_confirmation"])
    assert results["production_confirmation"].resent == 2
    assert dict(results["production_confirmation"].answers) == {"duplicate": 1, "accepted": 1}
    assert_no_duplicate_keys(erp_dsn)
    states = rows(built, "select idempotency_key, state, erp_answer from ops.erp_outbox "
                         "where business_key = %s order by outbox_id", (confirmation,))
    assert states == [
        (f"production_confirmation:{confirmation}:v1", "accepted", "accepted"),
        (f"production_confirmation:{confirmation}:v1:reversal", "accepted", "duplicate"),
        (f"production_confirmation:{confirmation}:v2", "accepted", "accepted"),
    ]


def test_a_changed_confirmation_posts_one_reversal_and_one_new_posting(built, erp_dsn):
    """… once the gate has checked it: rebuilt publish models are not posted before."""
    confirmation, good = rows(built, """
        select business_key, good_qty from publish.pub_erp__production_confirmation p
        join dq.scope_status s on s.site_code = p.site_code and s.production_day = p.production_date
        where s.decision = 'passed' and good_qty > 1 order by business_key desc limit 1""")[0]
    before = len(erp_postings(erp_dsn))
    correct_confirmation(built, confirmation, good_qty=int(good) - 1)
    rebuild_publish_models()
    unchecked = publish(built, erp_dsn, "publish-4-before-the-gate")
    assert all(r.planned_postings == 0 and r.planned_reversals == 0 for r in unchecked.values())
    assert unchecked["production_confirmation"].actions["unchecked"] >= 1
    assert len(erp_postings(erp_dsn)) == before
    gate(built, "gate-4")
    results = publish(built, erp_dsn, "publish-4")
    confirmations = results["production_confirmation"]
    assert (confirmations.planned_reversals, confirmations.planned_postings) == (1, 1)
    new = erp_postings(erp_dsn)[before:]
    assert [(key, status, reversal_of) for key, _, status, reversal_of, _ in new] == [
        (f"production_confirmation:{confirmation}:v1:reversal", "accepted",
         f"production_confirmation:{confirmation}:v1"),
        (f"production_confirmation:{confirmation}:v2", "accepted", None),
    ]
    assert new[1][4]["yield_qty"] == int(good) - 1
    assert all(r.planned_postings == 0 for t, r in results.items() if t != "production_confirmation")


def test_an_error_check_blocks_only_its_scope_until_fixed(built, erp_dsn):
    """An unmapped item code on one confirmation blocks its site-day; the other days flow."""
    site, day, confirmation, item = rows(built, """
        select p.site_code, p.production_date, p.business_key, c.item_code
        from publish.pub_erp__production_confirmation p
        join conformed.fct_operation_confirmation c on c.confirmation_id = p.business_key
        order by p.production_date desc, p.business_key limit 1""")[0]
    correct_confirmation(built, confirmation, item_code="UNMAPPED-ITEM", good_qty=1)
    rebuild_publish_models()
    checks = gate(built, "gate-5")
    assert checks["gate_confirmation_material_mapped"].failing_rows == 1
    status = dict(rows(built, "select production_day, decision from dq.scope_status "
                              "where site_code = %s", (site,)))
    assert status[day] == "blocked"
    assert sum(1 for d in status.values() if d == "blocked") == 1
    results = publish(built, erp_dsn, "publish-5")
    assert results["production_confirmation"].planned_postings == 0
    assert [(s, d) for s, d, _ in results["production_confirmation"].blocked_scopes] == [
        (site, str(day))]
    assert "gate_confirmation_material_mapped" in results["production_confirmation"].blocked_scopes[0][2]

    correct_confirmation(built, confirmation, item_code=item)
    rebuild_publish_models()
    gate(built, "gate-6")
    assert dict(rows(built, "select production_day, decision from dq.scope_status "
                            "where site_code = %s", (site,)))[day] != "blocked"
    results = publish(built, erp_dsn, "publish-6")
    assert (results["production_confirmation"].planned_reversals,
            results["production_confirmation"].planned_postings) == (1, 1)
    assert_no_duplicate_keys(erp_dsn)


def test_a_warning_publishes_with_a_flag(built, erp_dsn):
    confirmation, good = rows(built, """
        select business_key, good_qty
        from publish.pub_erp__production_confirmation where good_qty > 10
        order by production_date, business_key limit 1""")[0]
    correct_confirmation(built, confirmation, scrap_qty=int(good) * 2)
    rebuild_publish_models()
    checks = gate(built, "gate-7")
    assert checks["gate_confirmation_scrap_share_plausible"].failing_rows >= 1
    results = publish(built, erp_dsn, "publish-7")
    assert results["production_confirmation"].planned_postings == 1
    flagged = rows(built, "select dq_flagged, payload->'scrap_qty' from ops.erp_outbox "
                          "where business_key = %s and kind = 'posting' "
                          "order by version desc limit 1", (confirmation,))
    assert flagged == [(True, int(good) * 2)]
    dbt("build", "--select", "mart_data_quality")
    trend = rows(built, "select scopes_checked, scopes_failing, failing_rows "
                        "from marts.mart_data_quality "
                        "where check_name = 'gate_confirmation_scrap_share_plausible'")
    scopes = rows(built, "select count(distinct (site_code, production_date)) "
                         "from publish.pub_erp__production_confirmation")[0][0]
    assert trend == [(scopes, 1, checks["gate_confirmation_scrap_share_plausible"].failing_rows)]


def test_a_publish_model_rebuild_waits_for_the_publish_lock(built):
    """dbt's pre-hook on the publish models takes the publish-models lock inside the model's
    transaction: while publish_erp (or the gate) holds it, the rebuild waits, then completes."""
    import threading
    import time

    from factory_platform.quality.checked import publish_models_locked

    done = {}

    def rebuild():
        dbt("run", "--select", "pub_erp__production_confirmation")
        done["at"] = time.monotonic()

    with psycopg.connect(built) as conn, publish_models_locked(conn):
        thread = threading.Thread(target=rebuild)
        thread.start()
        deadline = time.monotonic() + 60
        waiting = 0
        while not waiting and time.monotonic() < deadline and thread.is_alive():
            waiting = conn.execute(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted"
            ).fetchone()[0]
            conn.commit()
            time.sleep(0.2)
        assert waiting == 1 and "at" not in done
        released = time.monotonic()
    thread.join()
    assert done["at"] > released


def test_reconciliation_shows_no_difference_after_reading_the_erp_back(built, erp_dsn):
    from factory_platform.extract.run import extract_interval

    now = datetime.now(UTC)
    extract_interval("erp", "inbound_postings", now - timedelta(hours=2), now + timedelta(minutes=5),
                     dsn=built)
    dbt("build", "--select", "stg_erp__inbound_postings", "mart_erp_reconciliation")
    diffs = rows(built, """
        select order_number, mes_good_qty, published_good_qty, erp_good_qty
        from marts.mart_erp_reconciliation
        where published_vs_erp_good_diff <> 0 or published_vs_erp_scrap_diff <> 0
           or mes_vs_published_good_diff <> 0 or mes_vs_published_scrap_diff <> 0""")
    assert diffs == []
    totals = rows(built, "select sum(mes_good_qty), sum(erp_good_qty), count(*) "
                         "from marts.mart_erp_reconciliation")[0]
    truth = rows(built, "select sum(good_count) from conformed.fct_operation_confirmation")[0][0]
    assert totals[0] == truth and totals[1] == truth
    assert totals[2] == rows(built, "select count(distinct order_number) "
                                    "from publish.pub_erp__production_confirmation")[0][0]
