"""ERP and EAM together: extracting every interval a second time, and re-running the last
7 days of already-loaded intervals, leaves every raw_erp and raw_eam table unchanged (all
columns but `_extracted_at`, the wall-clock time of the load)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from erp.helpers import (
    SQL_SYSTEMS,
    extract_systems,
    first_differences,
    raw_contents,
    world_loaded,
)


@pytest.fixture(scope="module")
def loaded(plant, warehouse_dsn):
    return {system: world_loaded(plant, warehouse_dsn, system) for system in SQL_SYSTEMS}


def snapshot(dsn: str) -> dict:
    return {system: raw_contents(dsn, system) for system in SQL_SYSTEMS}


def differences(before: dict, after: dict) -> dict:
    return {system: diff for system in SQL_SYSTEMS
            if (diff := first_differences(before[system], after[system]))}


@pytest.mark.slow  # every interval twice plus a 7-day backfill: ~30 s, in `make test`
def test_second_pass_and_7_day_backfill_change_nothing(loaded, plant, warehouse_dsn):
    before = snapshot(warehouse_dsn)
    rows = {system: sum(len(r) for r in tables.values()) for system, tables in before.items()}
    assert rows == {"erp": 362, "eam": 19 + 347 + 371}
    intervals = loaded["erp"].intervals
    started = time.monotonic()
    extract_systems({system: intervals for system in SQL_SYSTEMS}, warehouse_dsn)
    second_pass = time.monotonic() - started
    assert differences(before, snapshot(warehouse_dsn)) == {}

    last_week = [i for i in intervals if i[0] >= plant.end - timedelta(days=7)]
    assert len(last_week) >= 7 * 24
    started = time.monotonic()
    extract_systems({system: last_week for system in SQL_SYSTEMS}, warehouse_dsn)
    backfill = time.monotonic() - started
    assert differences(before, snapshot(warehouse_dsn)) == {}
    print(f"\nsecond pass over {len(intervals)} intervals: {second_pass:.1f} s; "
          f"7-day backfill ({len(last_week)} intervals): {backfill:.1f} s; rows {rows}")
