"""The interval load itself, on the real warehouse: reject threshold, schema drift, replace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from factory_platform.extract.load import (
    Extraction,
    LoadRejected,
    LoadTarget,
    SourceRecord,
    load_batch,
)
from factory_platform.fields import Field

T0 = datetime(2026, 10, 20, tzinfo=UTC)
TARGET = LoadTarget(
    system="loadertest", entity="readings",
    fields=(Field("reading_id", required=True), Field("qty", "int", required=True, minimum=0),
            Field("read_at", "timestamptz", required=True)),
    natural_key=("reading_id",), replace_column="read_at", max_reject_share=0.2,
)


def record(i: int, **override) -> SourceRecord:
    payload = {"reading_id": f"R{i}", "qty": i, "read_at": (T0 + timedelta(minutes=i)).isoformat()}
    payload.update(override)
    return SourceRecord(source="page 1", record_ref=f"R{i}", payload=payload)


def load(dsn, records):
    calls = []
    extraction = Extraction(records=records, source_label="test api",
                            on_committed=lambda: calls.append("committed"))
    result = load_batch(dsn, TARGET, extraction, interval_start=T0,
                        interval_end=T0 + timedelta(hours=1), window_start=T0)
    return result, calls


@pytest.fixture()
def dsn(warehouse_dsn):
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("drop schema if exists raw_loadertest cascade")
        conn.execute("delete from ops.quarantine where system = 'loadertest'")
        conn.execute("delete from ops.schema_drift where system = 'loadertest'")
        conn.execute("delete from ops.load_audit where system = 'loadertest'")
    return warehouse_dsn


def rows(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select reading_id, qty, _extra::text from raw_loadertest.readings order by 1").fetchall()


def test_too_many_rejects_fail_naming_source_and_reasons_and_load_nothing(dsn):
    good = [record(i) for i in range(1, 8)]
    bad = [record(8, qty=-1), record(9, qty="lots"), record(10, reading_id=None)]
    with pytest.raises(LoadRejected) as failure:
        load(dsn, good + bad)
    message = str(failure.value)
    assert message.startswith("loadertest.readings from test api: 3 of 10 records rejected")
    assert "R8: field 'qty': -1 is below its minimum 0" in message
    assert "R9: field 'qty': cannot read 'lots' as int" in message
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from raw_loadertest.readings").fetchone()[0] == 0
        kept = conn.execute("select record_ref from ops.quarantine where system = 'loadertest' "
                            "order by 1").fetchall()
        audit = conn.execute("select rows_read, rows_loaded, rows_quarantined, status "
                             "from ops.load_audit "
                             "where system = 'loadertest'").fetchone()
    assert kept == [("R10",), ("R8",), ("R9",)]  # kept for diagnosis, counted in the audit
    assert audit == (10, 0, 3, "rejected")


def test_a_rejected_record_is_quarantined_with_its_payload(dsn):
    result, calls = load(dsn, [record(i) for i in range(1, 10)] + [record(10, qty=-5)])
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (10, 9, 1)
    assert calls == ["committed"]
    with psycopg.connect(dsn) as conn:
        ref, reason, payload = conn.execute(
            "select record_ref, reason, raw_payload from ops.quarantine "
            "where system = 'loadertest'").fetchone()
    assert (ref, reason) == ("R10", "field 'qty': -5 is below its minimum 0")
    assert '"qty": -5' in payload


def test_a_new_source_column_is_kept_and_recorded(dsn):
    result, _ = load(dsn, [record(1, shift_leader="王伟")])
    assert result.new_columns == ["shift_leader"]
    assert rows(dsn) == [("R1", 1, '{"shift_leader": "王伟"}')]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select column_name from ops.schema_drift "
                            "where system = 'loadertest'").fetchall() == [("shift_leader",)]


def test_rerunning_a_window_replaces_it_and_dedups_exact_duplicates(dsn):
    load(dsn, [record(i) for i in range(1, 6)])
    result, _ = load(dsn, [record(i) for i in range(1, 6)] + [record(3)])
    assert result.duplicates_skipped == 1 and result.rows_replaced == 5
    assert [r[0] for r in rows(dsn)] == ["R1", "R2", "R3", "R4", "R5"]
