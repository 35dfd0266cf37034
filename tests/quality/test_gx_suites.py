"""The GX quality gates against a small warehouse with known rows: two sites × three production
days under test (and seven days of history before them), one out-of-range temperature on site
GXA day 2, a missing operation and a missing site on site GXB day 1, and site GXA day 3 with a
quarter of its usual MES confirmations.

In a database of its own, the relations the gate's dbt models read (staging and conformed
models, the plant_sites seed) are hand-made tables with those rows; dbt then builds the batches
(models/quality: qa_<suite>) and dq.scope_status over them, so the models' SQL, GX and the dq
tables run for real.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from _dags import registered
from factory_platform.quality.gx_suites import (
    SAMPLE_KEYS,
    SUITES,
    QualityGateFailed,
    Suite,
    Touched,
    between,
    gx_quality_gate,
    raise_for_failures,
    run_suites,
)

STAGING, CONFORMED = "staging", "conformed"  # the dbt models' own schemas, in a database of its own
QUALITY_MODELS = Path(__file__).resolve().parents[2] / "dbt_project" / "models" / "quality"
SITES = {"GXA": ("MA1", "Europe/Berlin"), "GXB": ("MB1", "Asia/Shanghai")}
DAYS = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]  # under test
HISTORY = [date(2026, 2, 23) + timedelta(days=i) for i in range(7)]  # 02-23 … 03-01
# [03-02 00:00Z, 03-05 00:00Z) holds every test-day row of both sites (local 08:00–12:00) and
# no history row.
START, END = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)
TAGS = {  # tag: (unit, hourly min, hourly max)
    "temperature": ("celsius", 40.0, 60.0), "pressure": ("bar", 1.0, 5.0),
    "vibration": ("mm_per_second", 0.5, 2.0), "power": ("kw", 5.0, 20.0),
    "counter": ("count", 100.0, 200.0),
}
SPIKE = ("GXA", DAYS[1], 9, "temperature", 1250.0)  # site, day, local hour, tag, hourly max
SPIKE_KEY = "MA1|temperature|2026-03-03T08:00Z"
NO_OPERATION, NO_SITE = "GXB-0302-1", "GXB-0302-2"  # confirmations of GXB day 1


def _local(day: date, hour: int, tz: str) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def _build_warehouse(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"create table {CONFORMED}.dim_site (site_code text, site_timezone text)")
        conn.execute(f"create table {CONFORMED}.plant_sites (site_code text, timezone text)")
        conn.execute(f"create table {CONFORMED}.dim_equipment (equipment_code text, "
                     "machine_code text, site_code text, hierarchy_level text)")
        for site, (machine, tz) in SITES.items():
            conn.execute(f"insert into {CONFORMED}.dim_site values (%s, %s)", (site, tz))
            conn.execute(f"insert into {CONFORMED}.plant_sites values (%s, %s)", (site, tz))
            conn.execute(f"insert into {CONFORMED}.dim_equipment values "
                         "(%s, null, %s, 'site'), (%s, %s, %s, 'machine')",
                         (site, site, machine, machine, site))
        conn.execute(f"""
            create table {CONFORMED}.dim_shift as
            select sites.site_code || '-' || to_char(days.day, 'YYYYMMDD') || '-'
                       || shifts.shift_code as shift_id,
                   sites.site_code, days.day::date as production_date, shifts.shift_code,
                   (days.day::date + shifts.starts) at time zone sites.site_timezone
                       as shift_start_at,
                   (days.day::date + shifts.starts + interval '8 hours')
                       at time zone sites.site_timezone as shift_end_at
            from {CONFORMED}.dim_site as sites
            cross join generate_series(date '2026-02-15', date '2026-03-15', interval '1 day')
                as days (day)
            cross join (values ('S1', time '06:00'), ('S2', time '14:00'), ('S3', time '22:00'))
                as shifts (shift_code, starts)""")
        conn.execute(f"""
            create table {CONFORMED}.fct_tag_reading_hour (
                machine_code text, tag_name text, reading_hour_at timestamptz,
                reading_unit text, sample_count bigint, min_value double precision,
                max_value double precision)""")
        conn.execute(f"""
            create table {STAGING}.stg_mes__confirmations (
                confirmation_id text, operation_id text, work_order_id text, site_code text,
                line_code text, machine_code text, item_code text,
                source_production_date date, source_shift_code text,
                confirmation_start_at timestamptz, confirmation_end_at timestamptz,
                good_count bigint, scrap_count bigint, rework_count bigint,
                produced_count bigint, recorded_at timestamptz, batch_id text)""")
        tags, confirmations = [], []
        for site, (machine, tz) in SITES.items():
            for day in HISTORY + DAYS:
                for hour in range(8, 12):
                    at = _local(day, hour, tz)
                    for tag, (unit, low, high) in TAGS.items():
                        if (site, day, hour, tag) == SPIKE[:4]:
                            high = SPIKE[4]
                        tags.append((machine, tag, at, unit, 60, low, high))
                    if site == "GXA" and day == DAYS[2] and hour > 8:
                        continue  # a quarter of the usual confirmations
                    cid = f"{site}-{day:%m%d}-{hour - 8}"
                    confirmations.append((
                        cid, None if cid == NO_OPERATION else f"OP-{cid}", "WO-1",
                        None if cid == NO_SITE else site, f"{site}-L1", machine, "ITEM-1",
                        day, "S1", at, at + timedelta(hours=1), 10, 1, 0, 11,
                        at + timedelta(hours=1), "b1"))
        with conn.cursor() as cur:
            cur.executemany(f"insert into {CONFORMED}.fct_tag_reading_hour values "
                            "(%s, %s, %s, %s, %s, %s, %s)", tags)
            cur.executemany(f"insert into {STAGING}.stg_mes__confirmations values "
                            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                            "%s)", confirmations)


@pytest.fixture(scope="module")
def dsn(pg, tmp_path_factory):
    """A database of its own: the dq tables (ensure_warehouse), the hand-made relations the
    gate's models read, and the gate's models built on them by dbt."""
    from factory_platform.dbt_project import run_dbt
    from factory_platform.warehouse import ensure_warehouse

    dsn = pg.create_database("quality_gx")
    ensure_warehouse(dsn)
    _build_warehouse(dsn)
    target = tmp_path_factory.mktemp("dbt-quality")
    done = run_dbt(dsn, "run", "--select", "path:models/quality", target_path=str(target))
    assert done.returncode == 0, done.stdout[-4000:]
    yield dsn
    pg.cluster.drop_database("quality_gx")


@pytest.fixture
def suites(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("truncate dq.check_result")
    return SUITES


def _results(dsn: str, run_id: str) -> dict[tuple, tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select check_name, site_code, production_day, failing_count, sample_keys, "
            "check_kind, severity, source_system, target from dq.check_result "
            "where run_id = %s", (run_id,)).fetchall()
    return {(r[0], r[1], r[2]): r[3:] for r in rows}


def _scope_status(dsn: str) -> dict[tuple, tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select site_code, production_day, decision, failing_checks "
                            "from dq.scope_status").fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def test_every_suite_validates_a_documented_dbt_model_with_the_columns_it_checks():
    """The batches live in dbt: each suite's relation is its model quality.qa_<suite>, whose
    yml documents every column the suite reads (scope, key, checked columns)."""
    import yaml

    documented = {m["name"]: {c["name"] for c in m["columns"]} for m in yaml.safe_load(
        (QUALITY_MODELS / "_quality__models.yml").read_text())["models"]}
    for suite in SUITES:
        assert suite.relation == f"quality.qa_{suite.name}"
        assert (QUALITY_MODELS / f"{suite.model}.sql").exists(), suite.model
        read = {"site_code", "production_day", suite.key_column,
                *(e.column for e in suite.expectations)}
        assert read <= documented[suite.model], read - documented[suite.model]
        for touched in suite.touched:  # the scopes a run touched, from the gate's own models
            model = touched.relation.removeprefix("quality.")
            assert model in documented and "%(start)s" in touched.where, touched


def test_an_instant_is_placed_in_its_production_day_in_one_place():
    """The batches place instants with the project's one placement (macro assign_shift); no
    Python SQL and no other gate model reads the shift calendar itself."""
    from factory_platform.quality import gx_suites

    assert "dim_shift" not in Path(gx_suites.__file__).read_text()
    sql = {p.stem: p.read_text() for p in QUALITY_MODELS.glob("*.sql")}
    assert {"qa_scada_sensor_ranges", "qa_mes_confirmation_required_fields",
            "qa_row_counts_vs_history", "scope_status"} <= set(sql)
    assert not [name for name, text in sql.items() if "dim_shift" in text]
    for name in ("qa_scada_sensor_ranges", "qa_mes_confirmation_required_fields"):
        assert len(re.findall(r"\{\{ assign_shift\(", sql[name])) == 1, name
    # the row counts count the two other batches' rows in their scopes: no placement of its own
    assert "assign_shift" not in sql["qa_row_counts_vs_history"]
    assert {"qa_mes_confirmation_required_fields", "qa_scada_sensor_ranges"} == set(
        re.findall(r"ref\('(\w+)'\)", sql["qa_row_counts_vs_history"]))


SENSOR = "scada_sensor_ranges.expect_column_values_to_be_between"
MES_NOT_NULL = "mes_confirmation_required_fields.expect_column_values_to_not_be_null"
ROW_COUNTS = "row_counts_vs_history.expect_column_values_to_be_between"
FAILING = {  # check, site, day: failing_count, sample_keys
    (f"{SENSOR}.temperature_max_celsius", "GXA", DAYS[1]): (1, [SPIKE_KEY]),
    (f"{MES_NOT_NULL}.operation_id", "GXB", DAYS[0]): (1, [NO_OPERATION]),
    (f"{MES_NOT_NULL}.confirmation_site_code", "GXB", DAYS[0]): (1, [NO_SITE]),
    (f"{ROW_COUNTS}.mes_row_count_ratio", "GXA", DAYS[2]): (1, ["GXA|2026-03-04"]),
}


def test_results_per_expectation_and_scope(dsn, suites):
    outcomes = run_suites(dsn, "run-1", START, END, suites)
    assert [(o.name, o.success) for o in outcomes] == [
        ("scada_sensor_ranges", False), ("mes_confirmation_required_fields", False),
        ("row_counts_vs_history", False)]
    scopes = [(site, day) for site in SITES for day in DAYS]
    assert all(list(o.scopes) == scopes for o in outcomes)

    results = _results(dsn, "run-1")
    expected_checks = {e.check_name(s.name) for s in suites for e in s.expectations}
    assert len(expected_checks) == 9 + 16 + 2
    assert set(results) == {(c, site, day) for c in expected_checks for site, day in scopes}
    failing = {key: (row[0], row[1]) for key, row in results.items() if row[0] > 0}
    assert failing == FAILING
    assert all(row[1] == [] for row in results.values() if row[0] == 0)
    assert results[(f"{SENSOR}.temperature_max_celsius", "GXA", DAYS[1])][2:] == (
        "gx", "warn", "scada", f"{CONFORMED}.fct_tag_reading_hour")
    assert results[(f"{MES_NOT_NULL}.operation_id", "GXB", DAYS[0])][2:] == (
        "gx", "error", "mes", f"{STAGING}.stg_mes__confirmations")
    assert results[(f"{ROW_COUNTS}.mes_row_count_ratio", "GXA", DAYS[2])][2:] == (
        "gx", "warn", "mes", f"{STAGING}.stg_mes__confirmations")
    assert results[(f"{ROW_COUNTS}.scada_row_count_ratio", "GXA", DAYS[2])][2:] == (
        "gx", "warn", "scada", f"{CONFORMED}.fct_tag_reading_hour")

    status = _scope_status(dsn)
    assert {scope: decision for scope, (decision, _) in status.items()} == {
        **{scope: "passed" for scope in scopes},
        ("GXA", DAYS[1]): "flagged", ("GXB", DAYS[0]): "blocked", ("GXA", DAYS[2]): "flagged"}
    assert status[("GXB", DAYS[0])][1] == sorted(
        [f"{MES_NOT_NULL}.confirmation_site_code", f"{MES_NOT_NULL}.operation_id"])

    with pytest.raises(QualityGateFailed) as failed:
        raise_for_failures(outcomes)
    message = str(failed.value)
    for text in ("mes_confirmation_required_fields", "operation_id (not null)", NO_OPERATION,
                 "GXB 2026-03-02", "1 error-severity suite(s) failed", "1 scope(s) blocked"):
        assert text in message, text
    assert "row_counts_vs_history" not in message  # warnings, not errors
    assert "scada_sensor_ranges" not in message


def test_rebuilding_scope_status_keeps_the_views_built_on_it(dsn, tmp_path):
    """dq.scope_status is replaced in place (materialization replaced_view): building it again
    keeps the relation and the views on it — dbt's own view materialization drops the old view
    with CASCADE, and with it every gated reporting view until dbt builds them again."""
    from factory_platform.dbt_project import run_dbt

    with psycopg.connect(dsn) as conn:
        conn.execute("create schema if not exists gxt_scratch")
        conn.execute("create or replace view gxt_scratch.on_scope_status as "
                     "select site_code, production_day from dq.scope_status")
        before = conn.execute("select 'dq.scope_status'::regclass::oid").fetchone()[0]
    done = run_dbt(dsn, "run", "--select", "scope_status", target_path=str(tmp_path))
    assert done.returncode == 0, done.stdout[-4000:]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select 'dq.scope_status'::regclass::oid").fetchone()[0] == before
        assert conn.execute("select to_regclass('gxt_scratch.on_scope_status')").fetchone()[0]
        comment = conn.execute("select obj_description('dq.scope_status'::regclass)").fetchone()[0]
    assert comment.startswith("The quality gate's decision per scope")


def test_only_the_scopes_of_the_interval_are_evaluated(dsn, suites):
    """An hour of GXA's day 2 (09:00 local): the sensor and MES suites evaluate that scope
    alone, whole; GXB has no row in the hour."""
    hour = _local(DAYS[1], 9, "Europe/Berlin")
    outcomes = run_suites(dsn, "run-hour", hour, hour + timedelta(hours=1), suites)
    assert {o.name: o.scopes for o in outcomes} == {
        "scada_sensor_ranges": (("GXA", DAYS[1]),),
        "mes_confirmation_required_fields": (("GXA", DAYS[1]),),
        "row_counts_vs_history": (("GXA", DAYS[1]),)}
    assert {k: v[0] for k, v in _results(dsn, "run-hour").items() if v[0]} == {
        (f"{SENSOR}.temperature_max_celsius", "GXA", DAYS[1]): 1}

    # after GXA day 2's last hour: only the MES recorded its last confirmation then; that
    # re-checks the confirmations' scope, whole (all four rows), and its row counts
    recorded = _local(DAYS[1], 12, "Europe/Berlin")
    outcomes = run_suites(dsn, "run-recorded", recorded, recorded + timedelta(minutes=30), suites)
    assert {o.name: o.scopes for o in outcomes} == {
        "scada_sensor_ranges": (),
        "mes_confirmation_required_fields": (("GXA", DAYS[1]),),
        "row_counts_vs_history": (("GXA", DAYS[1]),)}
    assert outcomes[1].checks[0].checked_count == 4
    assert {c.check_name: c.failing_count for c in outcomes[2].checks} == {
        f"{ROW_COUNTS}.mes_row_count_ratio": 0, f"{ROW_COUNTS}.scada_row_count_ratio": 0}

    later = datetime(2026, 4, 1, tzinfo=UTC)  # no row: nothing evaluated, nothing written
    outcomes = run_suites(dsn, "run-empty", later, later + timedelta(days=1), suites)
    assert [(o.scopes, o.success) for o in outcomes] == [((), True)] * 3
    assert _results(dsn, "run-empty") == {}


def test_failing_counts_are_exact_and_sample_keys_capped(dsn, suites):
    """A suite of our own over a batch of our own: 16 failing hours in each of two scopes;
    each scope's count is exact, its keys the first ten, sorted."""
    with psycopg.connect(dsn) as conn:
        conn.execute("create schema if not exists gxt_scratch")
        conn.execute(f"""
            create or replace view gxt_scratch.pressure_below_three as
            select sites.site_code, (readings.reading_hour_at at time zone sites.site_timezone)::date
                       as production_day,
                   readings.machine_code || '|' || readings.tag_name || '|'
                   || readings.reading_hour_at::text as reading_key,
                   readings.reading_hour_at, readings.max_value as pressure_bar
            from {CONFORMED}.fct_tag_reading_hour as readings
            inner join {CONFORMED}.dim_equipment as machines using (machine_code)
            inner join {CONFORMED}.dim_site as sites using (site_code)
            where readings.tag_name <> 'vibration'""")
    own = Suite(
        name="pressure_below_three", source_system="scada", severity="warn",
        target=f"{CONFORMED}.fct_tag_reading_hour", key_column="reading_key",
        relation="gxt_scratch.pressure_below_three",
        touched=(Touched("gxt_scratch.pressure_below_three",
                         "reading_hour_at >= %(start)s and reading_hour_at < %(end)s"),),
        expectations=(between("pressure_bar", max_value=3),),
    )
    outcomes = run_suites(dsn, "run-own", START, START + timedelta(days=1), [own])
    check = outcomes[0].checks[0]
    assert {s: f.failing_count for s, f in check.failures.items()} == {
        ("GXA", DAYS[0]): 16, ("GXB", DAYS[0]): 16}
    rows = _results(dsn, "run-own")
    assert {k[1:]: (v[0], len(v[1])) for k, v in rows.items()} == {
        ("GXA", DAYS[0]): (16, SAMPLE_KEYS), ("GXB", DAYS[0]): (16, SAMPLE_KEYS)}
    keys = rows[("pressure_below_three.expect_column_values_to_be_between.pressure_bar", "GXA",
                 DAYS[0])][1]
    assert keys == sorted(keys) and all(k.startswith("MA1|") for k in keys)
    raise_for_failures(outcomes)  # warn only: logged, not raised


@pytest.fixture
def gate_dag():
    """Builds the in-test gate DAG; deletes it from the metadata DB afterwards."""
    built = []

    def build(dag_id: str, dsn: str, start: datetime, end: datetime, suites):
        built.append(dag_id)
        return _gate_dag(dag_id, dsn, start, end, suites)

    yield build
    from airflow.api.common.delete_dag import delete_dag

    for dag_id in built:
        delete_dag(dag_id)


def _gate_dag(dag_id: str, dsn: str, start: datetime, end: datetime, suites):
    from airflow.sdk import dag, task

    @dag(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC),
         catchup=False, default_args={"owner": "data-platform", "retries": 0})
    def gate_dag():
        @task
        def quality_gate(run_id=None):
            return gx_quality_gate(dsn, run_id, start, end, suites)

        quality_gate()

    return registered(gate_dag())


def _task_instance(dag_run):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id,
            TaskInstance.task_id == "quality_gate").one()


@pytest.mark.slow
def test_a_failing_error_suite_fails_its_airflow_task(dsn, suites, gate_dag, capsys, caplog):
    """Through Airflow (`dag.test`): the gate task fails, and its log (the task runner writes
    the exception to it) names the failing expectation, its bounds and a sample key."""
    run = gate_dag("quality_gate_failing", dsn, START, END, suites).test()
    assert str(run.state) == "failed"
    assert str(_task_instance(run).state) == "failed"
    log = capsys.readouterr().out + caplog.text
    assert "QualityGateFailed: 1 error-severity suite(s) failed" in log
    for text in (f"{MES_NOT_NULL}.operation_id", "operation_id (not null)", NO_OPERATION):
        assert text in log, text
    # failing data is a result: the step completed, and the gate may pass (scopes blocked)
    assert _gate_steps(dsn, run.run_id) == ["gx_gate"]


def _gate_steps(dsn: str, run_id: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [step for (step,) in conn.execute(
            "select step from dq.gate_step where run_id = %s order by step", (run_id,))]


def test_a_suite_that_cannot_be_evaluated_leaves_the_step_incomplete(dsn, suites):
    """An exception — not a failed expectation — records no completion: the gate stays shut
    (before, a crash of the GX step let quality_gate pass)."""
    from factory_platform.quality.checked import (
        GateIncomplete,
        close_gate,
        mark_step_done,
    )

    broken = replace(suites[0], name="broken", relation="no_such_relation")
    mark_step_done(dsn, "run-crash", "dbt_gate")
    with pytest.raises(Exception, match="no_such_relation"):
        gx_quality_gate(dsn, "run-crash", START, END, [broken])
    assert _gate_steps(dsn, "run-crash") == ["dbt_gate"]
    with pytest.raises(GateIncomplete, match="gx_gate"):
        close_gate(dsn, "run-crash")
    history = datetime(2026, 2, 26, tzinfo=UTC)  # passes every suite
    gx_quality_gate(dsn, "run-crash", history, history + timedelta(days=1), suites[:1])
    close_gate(dsn, "run-crash")  # the retried step completed


@pytest.mark.slow
def test_a_passing_gate_succeeds_in_airflow(dsn, suites, gate_dag):
    """The history days alone pass every suite (a warn-only failure would not fail either)."""
    start = datetime(2026, 2, 26, tzinfo=UTC)
    run = gate_dag("quality_gate_passing", dsn, start, start + timedelta(days=2), suites).test()
    assert str(run.state) == "success"
    assert str(_task_instance(run).state) == "success"
    with psycopg.connect(dsn) as conn:
        count, failing = conn.execute(
            "select count(*), sum(failing_count) from dq.check_result where run_id = %s",
            (run.run_id,)).fetchone()
    assert (count, failing) == (27 * 4, 0)  # 27 checks × 2 sites × 2 days
