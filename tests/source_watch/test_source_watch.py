"""Noticing silence (factory_platform.source_watch, the watch_sources DAG).

* Thresholds come from the registry's schedules (2 × cadence + grace).
* Not seen, on a scratch warehouse with batches of known times: an incident opens once when a
  system's entities loaded nothing for longer than its threshold (alerted once, to a real
  webhook), entities falling silent later join it without an alert, and it clears once — one
  more alert — when every silent entity has loaded a newer batch.
* Slow, against the served plant: an outage of the simulated MES (every request answers 503)
  leaves MES without batches; the incident opens as soon as the silence exceeds 40 minutes,
  not before, and a load after the plant is back clears it: exactly one alert each.
* Slow, with dbt: `dbt source freshness` results land in dq.source_freshness with the statuses
  the yml thresholds give (a table loaded now passes, 2 h ago warns, 3 days ago errors, an
  empty one errors); the DAG records them as the transformer.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from _webhook import Receiver, webhook_connection
from factory_platform.sources import all_sources, get_source

T0 = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_thresholds_follow_the_registry_schedules():
    from factory_platform.source_watch import GRACE, cadence, not_seen_after

    assert GRACE == timedelta(minutes=10)
    thresholds = {s: not_seen_after(src) for s, src in all_sources().items()}
    assert thresholds["mes"] == thresholds["qms"] == timedelta(minutes=40)  # every 15 min
    for system in ("erp", "eam", "wms", "scada", "ems"):  # hourly
        assert thresholds[system] == timedelta(hours=2, minutes=10), system
    assert thresholds["plm"] == timedelta(hours=48, minutes=10)  # daily at 06:00
    assert cadence(get_source("plm")) == timedelta(days=1)


@pytest.fixture
def watch_db(pg):
    """A scratch warehouse: schemas, ops and dq tables, no data."""
    from factory_platform.warehouse import ensure_warehouse

    name = f"watch_{uuid.uuid4().hex[:8]}"
    dsn = pg.create_database(name)
    ensure_warehouse(dsn)
    yield dsn
    pg.cluster.drop_database(name)


@pytest.fixture
def webhook(monkeypatch):
    receiver = Receiver()
    monkeypatch.delenv("SFDP_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_WEBHOOK",
                       webhook_connection(receiver.port, "whk" + uuid.uuid4().hex))
    yield receiver
    receiver.server.shutdown()


def audit(dsn: str, system: str, entity: str, finished_at: datetime,
          status: str = "loaded") -> None:
    """A batch in ops.load_audit that finished (committed) at `finished_at`."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "insert into ops.load_audit (batch_id, system, entity, interval_start, interval_end, "
            "window_start, source, rows_read, rows_loaded, rows_quarantined, duplicates_skipped, "
            "rows_replaced, started_at, finished_at, status) "
            "values (%s, %s, %s, %s, %s, %s, 'test', 1, 1, 0, 0, 0, %s, %s, %s)",
            (uuid.uuid4().hex, system, entity, finished_at - 15 * MINUTE, finished_at,
             finished_at - 15 * MINUTE, finished_at, finished_at, status))


def incidents(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select system, silent_entities, opened_at, cleared_at, open_alerted_at is not null, "
            "clear_alerted_at is not null from dq.source_not_seen order by incident_id").fetchall()


def test_not_seen_opens_once_grows_and_clears_once(watch_db, webhook):
    from factory_platform.source_watch import alert_not_seen, check_not_seen

    def check(minutes: int):
        return check_not_seen(watch_db, f"watch-{minutes}", as_of=T0 + minutes * MINUTE,
                              systems=("mes", "qms"))

    audit(watch_db, "mes", "work_orders", T0)
    audit(watch_db, "mes", "confirmations", T0)
    audit(watch_db, "qms", "inspection_lots", T0)
    audit(watch_db, "qms", "inspection_lots", T0 + 30 * MINUTE, status="refused")  # no data

    changes = check(39)  # within the 40 minutes: nothing
    assert (changes.opened, changes.cleared, changes.alerts_sent) == ([], [], 0)
    changes = check(41)
    assert (changes.opened, changes.alerts_sent) == (["mes", "qms"], 2)
    assert [a["title"] for a in webhook.alerts] == ["Source not seen: mes",
                                                    "Source not seen: qms"]
    mes_alert = webhook.alerts[0]
    assert mes_alert["state"] == "open" and mes_alert["entities"] == ["confirmations",
                                                                      "work_orders"]
    assert "more than 40 min" in mes_alert["text"]
    assert "work_orders (last batch 2026-12-03 04:00 UTC)" in mes_alert["text"]

    audit(watch_db, "mes", "confirmations", T0 + 45 * MINUTE)  # one entity is back …
    changes = check(50)  # … the other is not: still open, no alert
    assert (changes.opened, changes.cleared, changes.alerts_sent) == ([], [], 0)
    assert list(incidents(watch_db)[0][1]) == ["work_orders"]
    changes = check(90)  # confirmations silent again (45 + 40 < 90): joins, no new alert
    assert (changes.opened, changes.cleared, changes.alerts_sent) == ([], [], 0)
    assert sorted(incidents(watch_db)[0][1]) == ["confirmations", "work_orders"]

    audit(watch_db, "mes", "work_orders", T0 + 95 * MINUTE)
    audit(watch_db, "mes", "confirmations", T0 + 95 * MINUTE)
    changes = check(96)
    assert (changes.opened, changes.cleared, changes.alerts_sent) == ([], ["mes"], 1)
    assert check(97).alerts_sent == 0 and alert_not_seen(watch_db) == 0
    assert [a["title"] for a in webhook.alerts] == [
        "Source not seen: mes", "Source not seen: qms", "Source seen again: mes"]
    assert webhook.alerts[2]["state"] == "cleared"
    assert "not seen from 2026-12-03 04:41 UTC to 2026-12-03 05:36 UTC" in webhook.alerts[2]["text"]
    assert incidents(watch_db) == [
        ("mes", {"confirmations": (T0 + 45 * MINUTE).isoformat(),
                 "work_orders": T0.isoformat()},
         T0 + 41 * MINUTE, T0 + 96 * MINUTE, True, True),
        ("qms", {"inspection_lots": T0.isoformat()}, T0 + 41 * MINUTE, None, True, False),
    ]


# --------------------------------------------------------------------------- against the plant


def _plant_admin(plant, path: str, body: dict) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"{plant.mes_url}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"X-API-Key": plant.api_key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.mark.slow
def test_a_plant_outage_raises_one_not_seen_alert_and_recovery_clears_it(
        plant, watch_db, webhook, monkeypatch):
    import _pipeline
    from factory_platform.extract import rest
    from factory_platform.extract.rest import SourceUnavailable
    from factory_platform.extract.run import extract_interval
    from factory_platform.source_watch import check_not_seen, not_seen_after

    original_init = rest.RestEndpoint.__init__

    def fast_init(self, *args, **kwargs):  # the outage should not take a minute of backoff
        original_init(self, *args, **{**kwargs, "backoff_s": 0.01})

    monkeypatch.setattr(rest.RestEndpoint, "__init__", fast_init)
    threshold = not_seen_after(get_source("mes"))
    day = _pipeline.day_windows(plant, days_before=0, days_after=0)[1]

    def last_batch() -> datetime:
        with psycopg.connect(watch_db) as conn:
            return conn.execute("select max(finished_at) from ops.load_audit where "
                                "system = 'mes' and status = 'loaded'").fetchone()[0]

    def check(as_of: datetime):
        return check_not_seen(watch_db, f"watch-{as_of:%H%M%S}", as_of=as_of, systems=("mes",))

    assert extract_interval("mes", "work_orders", *day, dsn=watch_db)["rows_loaded"] > 0
    seen_at = last_batch()
    _plant_admin(plant, "/_admin/faults", {"status": 503, "count": 50})  # the MES is down
    try:
        with pytest.raises(SourceUnavailable):
            extract_interval("mes", "work_orders", *day, dsn=watch_db)
    finally:
        _plant_admin(plant, "/_admin/reset", {})
    assert last_batch() == seen_at  # the failed run landed nothing

    assert check(seen_at + threshold - MINUTE).opened == []  # not yet beyond its threshold
    changes = check(seen_at + threshold + MINUTE)
    assert (changes.opened, changes.alerts_sent) == (["mes"], 1)
    assert check(seen_at + threshold + 11 * MINUTE).alerts_sent == 0  # alerted once, not again
    assert [a["title"] for a in webhook.alerts] == ["Source not seen: mes"]
    assert webhook.alerts[0]["entities"] == ["work_orders"]

    assert extract_interval("mes", "work_orders", *day, dsn=watch_db)["rows_loaded"] > 0
    back_at = last_batch()
    assert back_at > seen_at  # the plant is back: a new batch
    changes = check(seen_at + threshold + 21 * MINUTE)
    assert (changes.cleared, changes.alerts_sent) == (["mes"], 1)
    changes = check(back_at + MINUTE)  # the next watch run: seen, nothing to say
    assert (changes.opened, changes.cleared, changes.alerts_sent) == ([], [], 0)
    assert [a["title"] for a in webhook.alerts] == ["Source not seen: mes",
                                                    "Source seen again: mes"]
    with psycopg.connect(watch_db) as conn:
        assert conn.execute("select count(*), count(cleared_at) from dq.source_not_seen"
                            ).fetchone() == (1, 1)


# --------------------------------------------------------------------------- freshness (dbt)


@pytest.mark.slow
def test_source_freshness_results_land_in_dq_with_the_yml_statuses(pg):
    from factory_platform.bootstrap import bootstrap_warehouse
    from factory_platform.source_watch import run_source_freshness

    name = f"fresh_{uuid.uuid4().hex[:8]}"
    dsn = pg.create_database(name)
    try:
        bootstrap_warehouse(dsn)
        with psycopg.connect(dsn) as conn:
            for table, age in (("raw_mes.work_orders", "1 minute"),
                               ("raw_mes.confirmations", "2 hours"),  # MES: warn 1 h, error 6 h
                               ("raw_plm.items", "3 days")):  # PLM: warn 26 h, error 50 h
                conn.execute(
                    f"insert into {table} (_batch_id, _extracted_at, _source, _interval_start, "
                    f"_interval_end) values ('b1', now() - interval '{age}', 'test', now(), now())")
        results = run_source_freshness(dsn, "freshness-test", select=(
            "source:mes.work_orders", "source:mes.confirmations", "source:plm.items",
            "source:qms.inspection_lots"))  # qms.inspection_lots: empty
        assert len(results) == 4
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "select source_name, table_name, status, max_loaded_at is not null, "
                "round(age_seconds / 3600), warn_after_seconds, error_after_seconds "
                "from dq.source_freshness where run_id = 'freshness-test' "
                "order by source_name, table_name").fetchall()
    finally:
        pg.cluster.drop_database(name)
    assert rows == [
        ("mes", "confirmations", "warn", True, 2, 3600.0, 21600.0),  # age in hours
        ("mes", "work_orders", "pass", True, 0, 3600.0, 21600.0),
        ("plm", "items", "error", True, 72, 26 * 3600.0, 50 * 3600.0),
        ("qms", "inspection_lots", "error", False, None, 3600.0, 21600.0),
    ]


@pytest.mark.slow
def test_the_watch_dag_records_freshness_as_the_transformer(project_root, pg):
    """watch_sources through Airflow on the shared test warehouse: both tasks succeed with
    the transformer's connection, and every raw table of the registry has its result."""
    import os

    from airflow.dag_processing.dagbag import DagBag
    from factory_platform.dbt_project import MANIFEST_PATH, parse_manifest

    if not MANIFEST_PATH.exists():  # dag.test() parses the whole folder: transform_dbt needs it
        parse_manifest(dict(os.environ))
    bag = DagBag(dag_folder=str(project_root / "dags" / "watch_sources.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("watch_sources")
    for task in dag.tasks:
        task.retries = 0
    run = dag.test()
    assert str(run.state) == "success"
    with psycopg.connect(pg.cluster.dsn("warehouse")) as conn:  # a DSN naming a password file
        rows = conn.execute("select source_name, table_name, status from dq.source_freshness "
                            "where run_id = %s", (run.run_id,)).fetchall()
        owner = conn.execute("select tableowner from pg_tables where schemaname = 'dq' "
                             "and tablename = 'source_freshness'").fetchone()[0]
    assert {s for s, _, _ in rows} == set(all_sources())  # every system's raw tables …
    assert len(rows) == len({(s, t) for s, t, _ in rows})  # … each once
    assert len(rows) >= sum(len(source.entities) for source in all_sources().values())
    assert {status for _, _, status in rows} <= {"pass", "warn", "error"}
    assert owner == "sfdp_transformer"
