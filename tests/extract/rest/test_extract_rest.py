"""MES and QMS (REST) into raw_*: every record the plant emitted lands once, unusable ones are
quarantined with a reason, re-runs and backfills change nothing, and the API's failures
(HTTP 500 bursts, 429 with Retry-After) end as designed."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import _pipeline
import psycopg
import pytest
from _pipeline import extract_all
from factory_platform.extract.rest import SourceUnavailable
from factory_platform.extract.run import extract_interval
from factory_platform.sources import all_sources, get_source

# every REST system of the source registry (the simulated plant serves each)
SYSTEMS = tuple(system for system, source in all_sources().items() if source.interface == "rest")


def day_windows(plant) -> list[tuple[datetime, datetime]]:
    return _pipeline.day_windows(plant, days_before=1, days_after=1)


def emitted(plant, system: str, entity: str) -> list[dict]:
    """Every record version the plant's API holds (its change feed), as served."""
    with sqlite3.connect(plant.world / system / f"{system}.sqlite") as db:
        return [json.loads(body) for (body,) in db.execute(f"select body from {entity}")]


BATCH_METADATA = ("_batch_id", "_interval_start", "_interval_end", "_source")


def raw_snapshot(dsn: str, system: str, batch_metadata: bool = True) -> dict[str, list[tuple]]:
    """Every raw row of a system (without `_extracted_at`, the wall-clock load time; without
    the batch columns too when `batch_metadata` is False)."""
    skip = {"_extracted_at", *(() if batch_metadata else BATCH_METADATA)}
    tables = {}
    with psycopg.connect(dsn) as conn:
        for entity in get_source(system).entities:
            columns = [c for (c,) in conn.execute(
                "select column_name from information_schema.columns where table_schema = %s "
                "and table_name = %s order by ordinal_position",
                (f"raw_{system}", entity.name)) if c not in skip]
            cols = ", ".join(f'"{c}"::text' for c in columns)
            tables[entity.name] = conn.execute(
                f"select {cols} from raw_{system}.{entity.name} order by {cols}").fetchall()
    return tables


def reset(dsn: str, system: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"drop schema if exists raw_{system} cascade")
        conn.execute("delete from ops.quarantine where system = %s", (system,))
        conn.execute("delete from ops.load_audit where system = %s", (system,))


@pytest.fixture(scope="module")
def loaded(plant, warehouse_dsn):
    from factory_platform.warehouse import ensure_warehouse

    ensure_warehouse(warehouse_dsn)
    for system in SYSTEMS:
        reset(warehouse_dsn, system)
        extract_all(system, day_windows(plant), warehouse_dsn)
    return {system: raw_snapshot(warehouse_dsn, system) for system in SYSTEMS}


@pytest.mark.parametrize("system", SYSTEMS)
def test_raw_rows_are_the_emitted_records_minus_the_quarantined(loaded, plant, warehouse_dsn,
                                                                system):
    source = get_source(system)
    with psycopg.connect(warehouse_dsn) as conn:
        for entity in source.entities:
            records = emitted(plant, system, entity.name)
            quarantined = {ref for (ref,) in conn.execute(
                "select record_ref from ops.quarantine where system = %s and entity = %s",
                (system, entity.name))}
            key = entity.natural_key[0]
            expected = sorted((r[key], r["updated_at"]) for r in records if r[key] not in quarantined)
            landed = sorted(
                (k, u.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                for k, u in conn.execute(f'select "{key}", updated_at from raw_{system}.{entity.name}'))
            assert landed == expected, f"{system}.{entity.name}"
            assert len(records) == len(landed) + len(quarantined)


def test_mes_quarantine_is_exactly_what_the_truth_lists(loaded, warehouse_dsn):
    with psycopg.connect(warehouse_dsn) as conn:
        quarantined = dict(conn.execute(
            "select record_ref, reason from ops.quarantine where system = 'mes' "
            "and entity = 'confirmations'").fetchall())
        expected = {r for (r,) in conn.execute(
            "select record_id from truth.injected_defects where system = 'mes' "
            "and entity = 'confirmations' and action = 'quarantine'")}
        kinds = dict(conn.execute(
            "select record_id, kind from truth.injected_defects where system = 'mes' "
            "and entity = 'confirmations' and action = 'quarantine'").fetchall())
    assert expected and set(quarantined) == expected
    for record_id, reason in quarantined.items():
        if kinds[record_id] == "mes_null_mandatory":
            assert reason == "required field 'machine_code' is missing or null"
        else:
            assert "scrap_qty" in reason and "below its minimum 0" in reason


def test_good_pieces_survive_extraction(loaded, plant, warehouse_dsn):
    """Σ good pieces in raw (latest version per confirmation) = Σ over the emitted feed."""
    latest: dict[str, dict] = {}
    for record in emitted(plant, "mes", "confirmations"):
        if record.get("machine_code") is None or record["scrap_qty"] < 0:
            continue
        known = latest.get(record["confirmation_id"])
        if known is None or record["updated_at"] > known["updated_at"]:
            latest[record["confirmation_id"]] = record
    with psycopg.connect(warehouse_dsn) as conn:
        raw_good = conn.execute("""
            select sum(good_qty) from (select distinct on (confirmation_id) good_qty
            from raw_mes.confirmations order by confirmation_id, updated_at desc) latest""").fetchone()[0]
    assert raw_good == sum(r["good_qty"] for r in latest.values()) > 0


def test_chinese_text_is_intact(loaded, warehouse_dsn):
    with psycopg.connect(warehouse_dsn) as conn:
        texts = {t for (t,) in conn.execute(
            "select distinct defect_text_zh from raw_qms.defects")}
    assert "尺寸超差" in texts and "表面划伤" in texts


@pytest.mark.parametrize("system", SYSTEMS)
def test_load_audit_adds_up(loaded, warehouse_dsn, system):
    with psycopg.connect(warehouse_dsn) as conn:
        rows = conn.execute(
            "select entity, rows_read, rows_loaded, rows_quarantined, duplicates_skipped "
            "from ops.load_audit where system = %s", (system,)).fetchall()
        quarantine_rows = conn.execute(
            "select count(*) from ops.quarantine where system = %s", (system,)).fetchone()[0]
    assert rows
    for entity, read, loaded_rows, quarantined, duplicates in rows:
        assert read == loaded_rows + quarantined + duplicates, entity
    assert sum(r[3] for r in rows) >= quarantine_rows  # overlapping windows re-quarantine


def test_a_backfill_over_loaded_days_changes_nothing(loaded, plant, warehouse_dsn):
    """Re-running 7 loaded days leaves every raw row as it was. (Only the batch columns of
    the rows in the lookback overlap after the backfill's last day may now name the
    backfill's batch: they say which run last wrote a row.)"""
    backfill = day_windows(plant)[3:10]
    assert len(backfill) == 7
    for system in SYSTEMS:
        before = raw_snapshot(warehouse_dsn, system, batch_metadata=False)
        extract_all(system, backfill, warehouse_dsn)
        assert raw_snapshot(warehouse_dsn, system, batch_metadata=False) == before, system


@pytest.mark.slow  # every interval of the plant extracted twice (make test runs it)
def test_every_15_minute_interval_twice_changes_nothing(loaded, plant, warehouse_dsn):
    """The last day at the DAG's real 15-minute intervals, twice: the second pass changes
    nothing at all, and the data equals what the daily load had (only the batch that last
    wrote each row differs)."""
    day = day_windows(plant)[-2][0]
    intervals = [(day + timedelta(minutes=15 * i), day + timedelta(minutes=15 * (i + 1)))
                 for i in range(96)]
    extract_all("mes", intervals, warehouse_dsn)
    first_pass = raw_snapshot(warehouse_dsn, "mes")
    extract_all("mes", intervals, warehouse_dsn)
    assert raw_snapshot(warehouse_dsn, "mes") == first_pass
    with_metadata_dropped = raw_snapshot(warehouse_dsn, "mes", batch_metadata=False)
    extract_all("mes", [day_windows(plant)[-2]], warehouse_dsn)
    daily_data = raw_snapshot(warehouse_dsn, "mes", batch_metadata=False)
    assert with_metadata_dropped == daily_data
    assert sum(len(rows) for rows in daily_data.values()) > 0


def _admin(plant, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{plant.mes_url}{path}", data=json.dumps(body).encode() if body is not None else None,
        headers={"X-API-Key": plant.api_key, "Content-Type": "application/json"},
        method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _requests(plant) -> int:
    return _admin(plant, "/_admin/requests")["data_requests"]


def test_a_burst_of_http_500_is_retried_and_loads_everything(loaded, plant, warehouse_dsn):
    day_start, day_end = day_windows(plant)[3]
    before = raw_snapshot(warehouse_dsn, "mes", batch_metadata=False)["confirmations"]
    baseline = _requests(plant)
    extract_interval("mes", "confirmations", day_start, day_end, dsn=warehouse_dsn)
    pages = _requests(plant) - baseline
    _admin(plant, "/_admin/faults", {"status": 500, "count": 3})
    baseline = _requests(plant)
    summary = extract_interval("mes", "confirmations", day_start, day_end, dsn=warehouse_dsn)
    assert _requests(plant) - baseline == pages + 3  # three failed attempts, then every page
    assert summary["rows_loaded"] > 0
    assert raw_snapshot(warehouse_dsn, "mes", batch_metadata=False)["confirmations"] == before


def test_429_waits_for_retry_after(loaded, plant, warehouse_dsn):
    day_start, day_end = day_windows(plant)[4]
    _admin(plant, "/_admin/faults", {"status": 429, "count": 1, "retry_after": 2})
    started = time.monotonic()
    summary = extract_interval("mes", "work_orders", day_start, day_end, dsn=warehouse_dsn)
    assert time.monotonic() - started >= 2.0
    assert summary["rows_loaded"] > 0


def test_an_outage_fails_the_task_clearly_and_loads_nothing(loaded, plant, warehouse_dsn,
                                                            monkeypatch):
    from factory_platform.extract import rest

    monkeypatch.setattr(rest.RestEndpoint, "__init__", _fast_endpoint(rest.RestEndpoint.__init__))
    day_start, day_end = day_windows(plant)[5]
    before = raw_snapshot(warehouse_dsn, "mes")["operations"]
    _admin(plant, "/_admin/faults", {"status": 503, "count": 50})
    try:
        with pytest.raises(SourceUnavailable) as failure:
            extract_interval("mes", "operations", day_start, day_end, dsn=warehouse_dsn)
    finally:
        _admin(plant, "/_admin/reset", {})
    message = str(failure.value)
    assert "/api/v1/operations" in message and "HTTP 503" in message and "attempts" in message
    assert raw_snapshot(warehouse_dsn, "mes")["operations"] == before


def _fast_endpoint(original_init):
    """Same client, shorter backoff: the outage test should not sleep for a minute."""
    def init(self, *args, **kwargs):
        original_init(self, *args, **{**kwargs, "backoff_s": 0.01})
    return init
