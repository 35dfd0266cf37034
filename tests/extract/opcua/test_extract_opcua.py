"""extract_opcua: the shop floor's OPC UA history (the test plant's server, batch clock: its
retention holds the world's last 48 plant hours) extracted through the registry's client into
raw_opcua, then staged and conformed by dbt (fct_machine_signal_shift). Against the truth and
the MES, per machine × shift: pieces (good, scrap, rework, total) and state seconds; state
changes equal the MES's intervals; a backfill re-loads a window identically; a window the
server's retention no longer holds is refused, not deleted; bad-quality temperature samples
(BadSensorFailure) land flagged and stay out of the aggregates; energy per good unit of a whole
production day from the pieces OPC UA counted equals the truth's.

The counter rule for bad status (quarantine) and Sign & Encrypt: test_opcua_security.py."""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from _pipeline import _SESSION_MARK, dbt
from factory_platform.extract.run import (
    catchup_slices,
    extract_interval,
    extract_windows,
)
from factory_platform.sources import get_source
from psycopg import sql

SYSTEM, ENTITY = "opcua", "tag_values"
# the test plant's batch clock (its MES health says so; asserted below): the server keeps the
# 48 plant hours before it
CLOCK = datetime(2026, 11, 2, 6, 5, tzinfo=UTC)
LOAD_START = datetime(2026, 10, 31, 18, 0, tzinfo=UTC)  # inside CLOCK - 48 h, lookback included
# 3 shifts of 12 machines compared; production day 2026-11-01 (05:00-05:00 UTC) loaded whole,
# to the world's end
LOAD_END = datetime(2026, 11, 2, 5, 0, tzinfo=UTC)
ENERGY_DAY = date(2026, 11, 1)  # its energy per good unit from what OPC UA counted
SLICE = timedelta(hours=2)  # a history load (catch-up) in slices; scheduled runs are 15 min
LOOKBACK = get_source(SYSTEM).lookback  # 30 minutes: each run also reads the half hour before
TABLE = "raw_opcua.tag_values"
# the fact, the OEE per path and everything they read; the tests of the opcua staging models
# and of the fact
MODELS = ["+mart_oee_shift_by_signal_path", "+mart_energy_intensity_by_signal_path",
          "staging.opcua", "conformed.machine_signals"]
STAGING_VIEWS = ("stg_opcua__counter_changes", "stg_opcua__machine_state_changes",
                 "stg_opcua__process_values")


def rows(dsn: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(dsn: str, sql: str, *params):
    return rows(dsn, sql, *params)[0][0]


def per_shift(dsn: str, sql: str, *params) -> dict[tuple, tuple]:
    """Rows of (machine, production date, shift code, values…) keyed by their first three."""
    return {tuple(row[:3]): tuple(row[3:]) for row in rows(dsn, sql, *params)}


def slices(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end) in consecutive windows of `size`: the catch-up's own slicing, unlimited."""
    return catchup_slices(start, end, size, limit=1_000)


def content_hash(dsn: str, start: datetime, end: datetime, *, batch_columns: bool) -> tuple:
    """Rows and an md5 of the ordered rows of raw_opcua in [start, end): every declared column,
    and with `batch_columns` the batch's own (_batch_id, _source, interval) too — never
    `_extracted_at`, the wall-clock load time."""
    columns = [f'"{f.name}"' for f in get_source(SYSTEM).entity(ENTITY).fields] + ["_extra"]
    if batch_columns:
        columns += ["_batch_id", "_source", "_interval_start", "_interval_end"]
    row = ", ".join(columns)
    return tuple(rows(dsn, f"select count(*), md5(string_agg(({row})::text, '|' order by "
                           f"machine_code, tag, source_at)) from {TABLE} "
                           f"where source_at >= %s and source_at < %s", start, end)[0])


@pytest.fixture(scope="module")
def opcua_built(plant, warehouse_dsn):
    """raw_opcua holds [LOAD_START - lookback, LOAD_END) of the plant's history (2-hour
    slices), the MES's machine states and confirmations and the EAM's equipment around it are
    loaded, and the opcua models are built."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{plant.mes_url}/api/v1/health", timeout=10) as response:
        assert json.load(response)["clock"] == CLOCK.isoformat().replace("+00:00", "Z")
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute(f"truncate {TABLE}")
        for table in ("ops.quarantine", "ops.load_audit", "ops.extract_watermark",
                      "ops.source_incident"):
            conn.execute(f"delete from {table} where system = %s", (SYSTEM,))
    started = time.monotonic()
    results = [extract_interval(SYSTEM, ENTITY, s, e, dsn=warehouse_dsn)
               for s, e in slices(LOAD_START, LOAD_END, SLICE)]
    seconds = time.monotonic() - started
    loaded = sum(r["rows_loaded"] for r in results)
    print(f"\nopcua history [{LOAD_START:%m-%d %H:%M}, {LOAD_END:%m-%d %H:%M}): {len(results)} "
          f"batches, {loaded} rows in {seconds:.1f} s ({loaded / seconds:.0f} rows/s)")
    mes_window = (LOAD_START - timedelta(days=1), CLOCK)
    mes_entities = ("machine_states", "confirmations", "operations")
    # the MES from a clean slate: another module (tests/publish) adds corrected versions to
    # raw_mes by hand, which the plant never served — the loader rightly refuses an answer
    # that lacks them (`make test-fast` after `make test` on one instance met that)
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        for entity in mes_entities:
            if conn.execute("select to_regclass(%s)", (f"raw_mes.{entity}",)).fetchone()[0]:
                conn.execute(f"truncate raw_mes.{entity}")
        for table in ("ops.quarantine", "ops.load_audit", "ops.extract_watermark"):
            conn.execute(f"delete from {table} where system = 'mes' and entity = any(%s)",
                         (list(mes_entities),))
    for entity in mes_entities:
        extract_interval("mes", entity, *mes_window, dsn=warehouse_dsn)
    extract_interval("eam", "equipment", *mes_window, dsn=warehouse_dsn)
    # the EMS meters' hourly files of the loaded range (read again from the archive if another
    # module picked them up): the energy of ENERGY_DAY
    extract_windows("ems", [(LOAD_START, LOAD_END)], dsn=warehouse_dsn)
    # the models and the tests of this path (not the other paths' and dimensions' tests, which
    # their own modules run on their data): one dbt start
    dbt("build", "--select", *MODELS, "--indirect-selection", "empty", "--threads", "2")
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:  # built by this session
        for view in STAGING_VIEWS:
            conn.execute(sql.SQL("comment on view staging.{} is {}").format(
                sql.Identifier(view), sql.Literal(_SESSION_MARK)))
    return results


def compared_shifts(dsn: str) -> list[tuple]:
    """Every machine × shift wholly inside the loaded history, an hour after its start (the
    first reading of a counter has no increment) and before its last state change."""
    return rows(dsn, "select machine_code, production_date::date, shift_code, "
                     "shift_start_at::timestamptz, shift_end_at::timestamptz "
                     "from truth.machine_counter_shift where shift_start_at::timestamptz >= %s "
                     "and shift_end_at::timestamptz <= %s order by 4, 1",
                LOAD_START + timedelta(hours=1), LOAD_END - timedelta(hours=2))


def test_every_value_of_the_history_is_in_raw_or_quarantined(opcua_built, warehouse_dsn):
    read = sum(r["rows_read"] for r in opcua_built)
    loaded = sum(r["rows_loaded"] for r in opcua_built)
    quarantined = sum(r["rows_quarantined"] for r in opcua_built)
    assert read == loaded + quarantined and quarantined == 0  # the plant's bad values are analog
    # the slices overlap by the lookback: each value is in raw once
    assert scalar(warehouse_dsn, f"select count(*) from {TABLE}") == scalar(
        warehouse_dsn, f"select count(distinct (machine_code, tag, source_at)) from {TABLE}")
    assert scalar(warehouse_dsn, f"select count(*) from {TABLE}") > 80_000
    # Temperature, as the server publishes it: a sample a minute, every machine, the whole time
    minutes = (LOAD_END - LOAD_START + LOOKBACK).total_seconds() // 60
    assert rows(warehouse_dsn, f"select count(*), count(distinct machine_code) from {TABLE} "
                               f"where tag = 'Temperature'") == [(12 * minutes, 12)]
    audit = rows(warehouse_dsn, "select count(*), sum(rows_loaded), bool_and(status = 'loaded') "
                                "from ops.load_audit where system = %s", SYSTEM)[0]
    assert audit == (len(opcua_built), loaded, True)
    # the ISA-95 tree of the browse: 12 machines × 9 tags, each under ENT/ERF/ERF-MACH/<line>
    tree = rows(warehouse_dsn, f"select count(distinct machine_code), count(distinct tag), "
                               f"bool_and(browse_path = 'ENT/' || site_code || '/' || area_code "
                               f"|| '/' || line_code || '/' || machine_code || '/' || tag) "
                               f"from {TABLE}")[0]
    assert tree == (12, 9, True)


def test_pieces_per_machine_and_shift_equal_the_truth_and_the_mes(opcua_built, warehouse_dsn):
    shifts = compared_shifts(warehouse_dsn)
    assert len(shifts) >= 3 * 12
    signal = per_shift(warehouse_dsn, "select machine_code, production_date, shift_code, "
                                      "good_count, scrap_count, rework_count, total_count from "
                                      "conformed.fct_machine_signal_shift where signal_path = "
                                      "'opcua'")
    counters = per_shift(warehouse_dsn, "select machine_code, production_date::date, shift_code, "
                                        "good_count::int, scrap_count::int, rework_count::int, "
                                        "total_count_end::int - total_count_start::int "
                                        "from truth.machine_counter_shift")
    oee = per_shift(warehouse_dsn, "select machine_code, production_date::date, shift_code, "
                                   "gq::int, sq::int, rq::int from truth.oee_machine_shift")
    mes = per_shift(warehouse_dsn, "select machine_code, production_date, shift_code, "
                                   "sum(good_qty), sum(scrap_qty), sum(rework_qty) from (select "
                                   "distinct on (confirmation_id) * from raw_mes.confirmations "
                                   "order by confirmation_id, updated_at desc) c group by 1, 2, 3")
    same_as_mes = 0
    for machine, day, shift, _start, _end in shifts:
        key = (machine, day, shift)
        assert signal[key] == counters[key], key
        if oee[key] == counters[key][:3]:  # the MES quarantined none of the shift's confirmations
            assert signal[key][:3] == mes[key] == oee[key], key
            same_as_mes += 1
    assert same_as_mes >= len(shifts) - 2
    assert sum(v[3] for k, v in signal.items() if k in {s[:3] for s in shifts}) > 10_000


def test_state_seconds_per_machine_and_shift_equal_the_truth_and_the_mes(opcua_built,
                                                                          warehouse_dsn):
    shifts = compared_shifts(warehouse_dsn)
    signal = per_shift(warehouse_dsn, "select machine_code, production_date, shift_code, "
                                      "running_seconds, idle_seconds, setup_seconds, "
                                      "planned_downtime_seconds, unplanned_downtime_seconds from "
                                      "conformed.fct_machine_signal_shift where signal_path = "
                                      "'opcua'")
    truth = per_shift(warehouse_dsn, "select machine_code, production_date::date, shift_code, "
                                     "apt_seconds::int, idle_seconds::int, setup_seconds::int, "
                                     "planned_downtime_seconds::int, "
                                     "unplanned_downtime_seconds::int from truth.oee_machine_shift")
    mes = {}
    for machine, day, shift, state, seconds in rows(
            warehouse_dsn, "select machine_code, production_date, shift_code, state, "
                           "sum(extract(epoch from end_at - start_at))::int from (select "
                           "distinct on (state_id) * from raw_mes.machine_states order by "
                           "state_id, updated_at desc) s group by 1, 2, 3, 4"):
        mes.setdefault((machine, day, shift), {})[state] = seconds
    order = ("running", "idle", "setup", "planned_downtime", "unplanned_downtime")
    for machine, day, shift, start, end in shifts:
        key = (machine, day, shift)
        assert signal[key] == truth[key], key
        assert signal[key] == tuple(mes[key].get(s, 0) for s in order), key
        assert sum(signal[key]) == (end - start).total_seconds()


def test_oee_from_opcua_alone_equals_the_truth(opcua_built, warehouse_dsn):
    """ISO 22400 per machine × shift from what OPC UA delivered (mart_oee_shift_by_signal_path:
    PRI from each piece's operation, the one the machine's State/OperationId names) equals the
    truth's OEE and its factors and elements."""
    shifts = compared_shifts(warehouse_dsn)
    columns = ("pbt_seconds, apt_seconds, pri_seconds, pq, gq, availability, effectiveness, "
               "quality_ratio, oee")
    signal = per_shift(warehouse_dsn, f"select machine_code, production_date, shift_code, "
                                      f"{columns} from marts.mart_oee_shift_by_signal_path "
                                      f"where signal_path = 'opcua'")
    truth = per_shift(warehouse_dsn, f"select machine_code, production_date::date, shift_code, "
                                     f"{columns} from truth.oee_machine_shift")
    unattributed = dict(rows(warehouse_dsn, "select machine_code || production_date || "
                                            "shift_code, pieces_without_operation_count from "
                                            "marts.mart_oee_shift_by_signal_path where "
                                            "signal_path = 'opcua'"))
    for machine, day, shift, _start, _end in shifts:
        key = (machine, day, shift)
        assert unattributed[f"{machine}{day}{shift}"] == 0, key
        got, want = signal[key], truth[key]
        assert got[:2] == tuple(int(v) for v in want[:2]), key  # PBT, APT
        assert float(got[2]) == pytest.approx(float(want[2]), abs=1e-6), key  # PRI
        assert got[3:5] == tuple(int(v) for v in want[3:5]), key  # PQ, GQ
        assert got[5:] == pytest.approx([float(v) for v in want[5:]], rel=1e-9), key
    assert sum(signal[s[:3]][8] > 0 for s in shifts) >= len(shifts) * 3 // 4  # real OEE, not 0


def test_energy_per_good_unit_from_opcua_alone_equals_the_truth(opcua_built, warehouse_dsn):
    """mart_energy_intensity_by_signal_path on the production day OPC UA delivered whole: per
    machine, the day's kWh (EMS), the good pieces OPC UA counted over its three shifts and kWh
    per good unit equal the truth's (its counters and meters) — energy per unit does not depend
    on the path that carried the counts."""
    path = {row[0]: row[1:] for row in rows(
        warehouse_dsn, "select machine_code, shift_count, energy_kwh, good_count, "
                       "kwh_per_good_unit from marts.mart_energy_intensity_by_signal_path "
                       "where signal_path = 'opcua' and production_date = %s", ENERGY_DAY)}
    counted = dict(rows(warehouse_dsn, "select machine_code, sum(good_count::bigint) from "
                                       "truth.machine_counter_shift where production_date::date "
                                       "= %s group by 1", ENERGY_DAY))
    energy = {machine: (float(kwh), good, ratio) for machine, kwh, good, ratio in rows(
        warehouse_dsn, "select machine_code, energy_kwh, good_qty, kwh_per_good_unit from "
                       "truth.energy_machine_day where production_date = %s", ENERGY_DAY)}
    assert len(path) == len(counted) == len(energy) == 12
    assert sum(counted.values()) > 5_000
    same_as_mes = 0
    for machine, (shifts, kwh, good, ratio) in path.items():
        assert shifts == 3, machine
        assert float(kwh) == pytest.approx(energy[machine][0], abs=1e-3), machine
        assert good == counted[machine], machine
        expected = energy[machine][0] / good if good else None
        assert ratio == (None if expected is None else pytest.approx(expected, rel=1e-9)), machine
        if energy[machine][1] == good:  # the MES confirmed every piece: the truth's own ratio
            assert ratio == pytest.approx(energy[machine][2], rel=1e-9), machine
            same_as_mes += 1
    assert same_as_mes >= 10


def test_state_changes_are_the_mes_intervals(opcua_built, warehouse_dsn):
    """Every MES machine-state interval that starts in the loaded range is one state change
    in OPC UA, at the same instant, with the same state, reason and operation."""
    start, end = LOAD_START - LOOKBACK, LOAD_END
    opcua = rows(warehouse_dsn, "select machine_code, changed_at, state, reason_code, "
                                "operation_id from staging.stg_opcua__machine_state_changes "
                                "where changed_at >= %s and changed_at < %s order by 1, 2",
                 start, end)
    mes = rows(warehouse_dsn, "select machine_code, start_at, state, nullif(reason_code, ''), "
                              "nullif(operation_id, '') from (select distinct on (state_id) * "
                              "from raw_mes.machine_states order by state_id, updated_at desc) s "
                              "where start_at >= %s and start_at < %s order by 1, 2", start, end)
    assert len(opcua) > 150
    assert opcua == mes


def test_bad_quality_samples_land_flagged_and_stay_out_of_the_aggregates(opcua_built,
                                                                         warehouse_dsn):
    """The rule: an analog value whose status is not Good lands with its status, staging flags
    it and nulls its value, the shift's average leaves it out and counts it."""
    listed = [r for (r,) in rows(warehouse_dsn, "select record_id from truth.injected_defects "
                                                "where kind = 'opcua_bad_quality'")]
    in_range = []
    for record in listed:
        machine, tag, ts = record.split("|")
        at = datetime.fromisoformat(ts)
        if LOAD_START <= at and at + timedelta(minutes=5) < LOAD_END:
            in_range.append((machine, tag, at))
    assert in_range, "the loaded history holds no injected bad-quality run"
    for machine, tag, at in in_range:
        got = rows(warehouse_dsn, f"select source_at, status, status_code from {TABLE} where "
                                  "machine_code = %s and tag = %s and source_at >= %s and "
                                  "source_at < %s order by 1", machine, tag,
                   at - timedelta(minutes=1), at + timedelta(minutes=6))
        assert [(s, c) for _, s, c in got] == [("Good", 0)] + [
            ("BadSensorFailure", 0x808C0000)] * 5 + [("Good", 0)], (machine, at)
        staged = rows(warehouse_dsn, "select is_good_quality, sample_value is null, delivered_value "
                                     "is not null from staging.stg_opcua__process_values where "
                                     "machine_code = %s and tag_name = 'temperature' and "
                                     "sampled_at >= %s and sampled_at < %s", machine, at,
                      at + timedelta(minutes=5))
        assert staged == [(False, True, True)] * 5
    bad_total = scalar(warehouse_dsn, f"select count(*) from {TABLE} where tag = 'Temperature' "
                                      "and status_code <> 0")
    assert bad_total >= 5 * len(in_range)
    # per shift: the good samples' average, the bad ones counted apart
    for machine, day, shift, start, end in compared_shifts(warehouse_dsn):
        expected = rows(warehouse_dsn, f"select count(*) filter (where status_code = 0), "
                                       f"count(*) filter (where status_code <> 0), "
                                       f"avg(value_numeric::double precision) filter "
                                       f"(where status_code = 0) from {TABLE} where machine_code "
                                       f"= %s and tag = 'Temperature' and source_at >= %s and "
                                       f"source_at < %s", machine, start, end)[0]
        got = rows(warehouse_dsn, "select temperature_sample_count, temperature_bad_sample_count,"
                                  " temperature_avg_celsius from conformed.fct_machine_signal_"
                                  "shift where signal_path = 'opcua' and machine_code = %s and "
                                  "production_date = %s and shift_code = %s", machine, day,
                   shift)[0]
        assert got[:2] == expected[:2] and got[0] + got[1] == (end - start).total_seconds() / 60
        assert got[2] == pytest.approx(expected[2], rel=1e-12)
    assert scalar(warehouse_dsn, "select sum(temperature_bad_sample_count) from conformed."
                                 "fct_machine_signal_shift") == bad_total


def test_a_backfill_reloads_a_window_identically(opcua_built, warehouse_dsn):
    """A re-run of a batch gives the same rows, batch columns included; a backfill of the same
    time in the schedule's 15-minute runs (each with its 30-minute lookback) gives the same
    values; the values are in raw once; re-running the history's slices restores every row."""
    start, end = datetime(2026, 11, 1, 10, 0, tzinfo=UTC), datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    window = (start - LOOKBACK, end)  # the 2-hour slice's window, lookback included
    # what that batch owns after the history load: the next slice's lookback re-took its end
    owned = (window[0], end - LOOKBACK)
    before = content_hash(warehouse_dsn, *owned, batch_columns=True)
    values = content_hash(warehouse_dsn, *window, batch_columns=False)
    assert before[0] > 5_000
    total = scalar(warehouse_dsn, f"select count(*) from {TABLE}")
    again = extract_interval(SYSTEM, ENTITY, start, end, dsn=warehouse_dsn)
    assert again["rows_replaced"] == again["rows_loaded"] == values[0]
    assert content_hash(warehouse_dsn, *owned, batch_columns=True) == before
    assert content_hash(warehouse_dsn, *window, batch_columns=False) == values
    for s, e in slices(start - LOOKBACK, end, timedelta(minutes=15)):
        extract_interval(SYSTEM, ENTITY, s, e, dsn=warehouse_dsn, watermark="keep")
    assert content_hash(warehouse_dsn, *window, batch_columns=False) == values
    assert content_hash(warehouse_dsn, *owned, batch_columns=True) != before  # new batches
    assert scalar(warehouse_dsn, f"select count(*) from {TABLE}") == total
    # the history's two slices again: back to the very rows, batch columns included
    extract_interval(SYSTEM, ENTITY, start, end, dsn=warehouse_dsn)
    extract_interval(SYSTEM, ENTITY, end, end + SLICE, dsn=warehouse_dsn)
    assert content_hash(warehouse_dsn, *owned, batch_columns=True) == before
    assert content_hash(warehouse_dsn, *window, batch_columns=False) == values


@pytest.mark.parametrize("at, refusal, message", [
    # beyond the server's retention: HistoryRead answers nothing
    (datetime(2026, 10, 25, 10, 0, tzinfo=UTC), "EmptyAnswerRefused", "not applied as a deletion"),
    # inside it, an answer that lacks a value raw holds (one the server does not have)
    (datetime(2026, 11, 1, 10, 0, tzinfo=UTC), "IncompleteAnswerRefused",
     "lacks 1 version.* not applied as a deletion"),
])
def test_an_answer_lacking_values_raw_holds_is_refused_not_deleted(
        opcua_built, warehouse_dsn, at, refusal, message):
    """History is append-only: a re-load of a window whose answer lacks values raw holds for
    it — all of them (past the retention) or some — is refused, nothing is replaced, the rows
    stay and the refusal is a source incident."""
    from factory_platform.extract import load

    before = content_hash(warehouse_dsn, at - LOOKBACK, at + timedelta(minutes=15),
                          batch_columns=True)
    lacking = at + timedelta(minutes=5, milliseconds=123)  # no value of the plant's is there
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute(
            f"insert into {TABLE} (source_at, machine_code, tag, node_id, status_code, status, "
            f"value_numeric, _batch_id, _extracted_at, _source, _interval_start, _interval_end) "
            f"values (%s, 'ERF-L1-M01', 'GoodCount', 'nsu=urn:sfdp:plant-sim;s=ERF-L1-M01."
            f"GoodCount', 0, 'Good', 42, 'earlier', now(), 'earlier', %s, %s)",
            (lacking, at, at + timedelta(minutes=15)))
    try:
        with pytest.raises(getattr(load, refusal), match=message):
            extract_interval(SYSTEM, ENTITY, at, at + timedelta(minutes=15), dsn=warehouse_dsn,
                             watermark="keep")
        assert scalar(warehouse_dsn, f"select count(*) from {TABLE} where source_at = %s",
                      lacking) == 1
        with psycopg.connect(warehouse_dsn) as conn:
            conn.execute(f"delete from {TABLE} where _batch_id = 'earlier'")
        assert content_hash(warehouse_dsn, at - LOOKBACK,
                            at + timedelta(minutes=15), batch_columns=True) == before
        assert scalar(warehouse_dsn, "select count(*) from ops.source_incident where system = "
                                     "%s and reason like %s", SYSTEM, f"{refusal}: %") == 1
    finally:
        with psycopg.connect(warehouse_dsn) as conn:
            conn.execute(f"delete from {TABLE} where _batch_id = 'earlier'")
            conn.execute("delete from ops.source_incident where system = %s", (SYSTEM,))
            conn.execute("delete from ops.load_audit where system = %s and status = 'refused'",
                         (SYSTEM,))


def test_history_read_follows_continuation_points(opcua_built, warehouse_dsn):
    """The plant's server answers at most 1,000 values a node at once: 35.5 hours of every
    machine's Temperature (a sample a minute) take two more requests with each node's
    continuation point, and the values read are exactly those raw holds."""
    import asyncio

    from factory_platform.extract.opcua import endpoint_for, read_history

    start = LOAD_START - LOOKBACK
    minutes = int((LOAD_END - start).total_seconds() // 60)
    history = asyncio.run(read_history(endpoint_for("plant_opcua"), start, LOAD_END,
                                       {"Temperature"}))
    assert history.requests == 3 and minutes > 2_000
    read = {tag.machine_code: (len(history.values[i]), sum(v[3] for v in history.values[i]))
            for i, tag in enumerate(history.tags)}
    assert len(read) == 12 and {n for n, _ in read.values()} == {minutes}
    assert read == {m: (n, total) for m, n, total in rows(
        warehouse_dsn, f"select machine_code, count(*), sum(value_numeric) from {TABLE} where "
                       f"tag = 'Temperature' and source_at >= %s and source_at < %s group by 1",
        start, LOAD_END)}


def test_the_registry_declares_the_opcua_interface():
    from factory_platform.extract.clients import client_for

    source = get_source(SYSTEM)
    assert (source.interface, source.connection_kind, source.pool_slots) == ("opcua", "opcua", 2)
    assert client_for("opcua").__name__ == "factory_platform.extract.opcua"
    assert "AIRFLOW_CONN_PLANT_OPCUA" in os.environ  # the embedded default's connection


@pytest.mark.slow
def test_the_extract_opcua_dag_runs_one_interval(opcua_built, project_root, warehouse_dsn):
    """One scheduled run of the registry's DAG through Airflow (`dag.test`): its task reads
    the 15-minute interval (and the lookback) from the plant's server and audits its batch."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    dag = DagBag(dag_folder=str(project_root / "dags" / "extract_sources.py")).get_dag(
        "extract_opcua")
    for task in dag.tasks:  # fail fast: a retry would only wait out its delay
        task.retries = 0
    values = content_hash(warehouse_dsn, LOAD_START, LOAD_END, batch_columns=False)
    run = dag.test(logical_date=datetime(2026, 11, 1, 15, 0, tzinfo=UTC))
    assert run.state == DagRunState.SUCCESS
    start, end = run.data_interval_start, run.data_interval_end
    assert end - start == timedelta(minutes=15)
    audit = rows(warehouse_dsn, "select status, window_start, rows_loaded from ops.load_audit "
                                "where system = 'opcua' and run_id = %s and interval_start = %s "
                                "and interval_end = %s", run.run_id, start, end)
    assert [a[:2] for a in audit] == [("loaded", start - LOOKBACK)]
    assert audit[0][2] > 1_000
    assert content_hash(warehouse_dsn, LOAD_START, LOAD_END, batch_columns=False) == values
