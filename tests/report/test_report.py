"""The `reporting` schema and the per-run HTML report.

In a scratch database: hand-made marts with known rows and a known quality-gate history in
dq.check_result; `dbt build` of the reporting models and of the gate's decision per scope they
read, dq.scope_status (unit tests, contracts and data tests included); then the gating of every
view, the renderer (on the built views and on a fixture schema with exactly known rows), the
page in headless Chromium, and the read-only role.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from factory_platform.report import ensure_reporting_reader
from factory_platform.report.render import VIEWS, render_report, safe_run_id
from factory_platform.warehouse import ensure_warehouse
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_DIR = PROJECT_ROOT / "dbt_project"
DBT = Path(sys.executable).parent / "dbt"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CHART_IDS = ("oee-trend", "downtime-pareto", "quality-trend", "inventory-accuracy",
             "energy-intensity", "data-quality")
GENERATED_AT = datetime(2026, 10, 23, 6, 0, tzinfo=UTC)

D1, D2, D3, D4 = (date(2026, 10, d) for d in (19, 20, 21, 22))
# The gate's history: ERF D1 passed (an earlier run's warning was superseded), ERF D2 flagged
# (warning), ERF D3 blocked (error), SZX D3 passed, ERF D4 never checked.
CHECK_RESULTS = [
    # run_id, checked_at, check_name, check_kind, source_system, target, severity, site, day, failing
    ("r0", "2026-10-21 05:00+00", "scada_flatline", "gx", "scada", "staging.stg_scada__tag_values",
     "warn", "ERF", D1, 3),
    ("r0", "2026-10-21 05:00+00", "wms_negative_quantity", "dbt", "wms",
     "staging.stg_wms__movements", "error", "ERF", D1, 0),
    *[("r1", "2026-10-22 05:00+00", "mes_orphan_confirmation", "dbt", "mes",
       "conformed.fct_operation_confirmation", "error", site, d, n)
      for site, d, n in (("ERF", D1, 0), ("ERF", D2, 0), ("ERF", D3, 5), ("SZX", D3, 0))],
    *[("r1", "2026-10-22 05:10+00", "scada_flatline", "gx", "scada",
       "staging.stg_scada__tag_values", "warn", site, d, n)
      for site, d, n in (("ERF", D1, 0), ("ERF", D2, 7), ("ERF", D3, 0), ("SZX", D3, 0))],
]
LINE_DAYS = [("ERF", line, d) for line in ("ERF-L1", "ERF-L2") for d in (D1, D2, D3, D4)]
LINE_DAYS.append(("SZX", "SZX-L1", D3))
SHOWN = {("ERF", "ERF-L1", D1), ("ERF", "ERF-L1", D2), ("ERF", "ERF-L2", D1),
         ("ERF", "ERF-L2", D2), ("SZX", "SZX-L1", D3)}

MARTS_DDL = """
create table marts.mart_oee_line_day (
    site_code text, line_code text, production_date date, availability double precision,
    effectiveness double precision, quality_ratio double precision, oee double precision);
create table marts.mart_quality (
    site_code text, line_code text, production_date date, produced_count bigint,
    first_pass_good_count bigint, scrap_count bigint, rework_count bigint,
    fpy double precision, scrap_ratio double precision, rework_ratio double precision);
create table marts.mart_energy_intensity_line_day (
    line_code text, production_date date, site_code text, energy_kwh numeric(18, 3),
    good_count bigint, kwh_per_good_unit double precision);
create table marts.mart_inventory_accuracy (
    site_code text, material_number text, balance_date date, quantity_unit text,
    book_quantity numeric, physical_quantity numeric, diff_quantity numeric,
    is_accurate boolean, accuracy_ratio double precision);
create table marts.mart_production_line_day (
    site_code text, line_code text, production_date date, good_count bigint,
    scrap_count bigint, rework_count bigint, produced_count bigint, confirmation_count bigint);
create table marts.mart_oee_loss_shift (
    site_code text, line_code text, machine_code text, production_date date, shift_code text,
    iso22400_time_category text, machine_state text, reason_code text, reason_text_en text,
    reason_text_zh text, duration_seconds bigint, interval_count bigint);
create table marts.mart_source_health (
    system text, last_loaded_at timestamptz, load_lag_seconds double precision,
    oldest_watermark_at timestamptz, rows_loaded_count bigint, rows_quarantined_count bigint,
    rejected_batch_count bigint, refused_batch_count bigint, open_incident_count bigint,
    files_set_aside_count bigint, files_waiting_count bigint, files_late_count bigint,
    answers_refused_count bigint, batches_failed_count bigint, open_incident_kinds text);
insert into marts.mart_source_health values
    ('mes', '2026-10-23 05:45+00', 900, '2026-10-23 05:45+00', 5000, 12, 0, 0, 0, 0, 0, 0, 0, 0,
     null),
    ('wms', '2026-10-23 05:00+00', 3600, '2026-10-22 05:00+00', 700, 30, 0, 0, 2, 1, 1, 0, 0, 0,
     'file_set_aside, file_waiting')
"""


def _mart_rows(conn) -> None:
    for i, (site, line, d) in enumerate(LINE_DAYS):
        a, e, q = 0.8 + i / 100, 0.9, 0.95
        conn.execute("insert into marts.mart_oee_line_day values (%s, %s, %s, %s, %s, %s, %s)",
                     (site, line, d, a, e, q, a * e * q))
        produced, scrap, rework = 1000 + i, 10 + i, 5
        conn.execute("insert into marts.mart_production_line_day values "
                     "(%s, %s, %s, %s, %s, %s, %s, %s)",
                     (site, line, d, produced - scrap - rework, scrap, rework, produced, 3))
        conn.execute(
            "insert into marts.mart_quality values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (site, line, d, produced, produced - scrap - rework, scrap, rework,
             (produced - scrap - rework) / produced, scrap / produced, rework / produced))
        good = 0 if (line, d) == ("ERF-L2", D2) else 900 + i
        conn.execute("insert into marts.mart_energy_intensity_line_day values "
                     "(%s, %s, %s, %s, %s, %s)",
                     (line, d, site, 1200.5 + i, good, (1200.5 + i) / good if good else None))
    for d, book, counted in ((D1, 200, 198), (D2, 150, 150), (D3, 100, 90), (D4, 80, 80)):
        conn.execute("insert into marts.mart_inventory_accuracy values "
                     "('ERF', '200012', %s, 'kg', %s, %s, %s, %s, %s)",
                     (d, book, counted, counted - book, counted == book,
                      1 - abs(counted - book) / book))
    losses = [
        ("ERF-L1", D1, "unplanned_downtime", "unplanned_downtime", "MECH", "Mechanical failure",
         "机械故障", 3600, 1),
        ("ERF-L1", D2, "unplanned_downtime", "unplanned_downtime", "MECH", "Mechanical failure",
         "机械故障", 1800, 2),
        ("ERF-L1", D3, "unplanned_downtime", "unplanned_downtime", "MECH", "Mechanical failure",
         "机械故障", 36000, 9),  # blocked scope: not counted
        ("ERF-L1", D1, "planned_downtime", "planned_downtime", "BREAK", "Shift break",
         "班次休息", 5400, 3),  # planned: not a loss
        ("ERF-L1", D1, "running", "running", "-", None, None, 20000, 4),
        ("ERF-L2", D1, "unplanned_downtime", "unplanned_downtime", "JAM", "Material jam", "卡料",
         7200, 4),
        ("ERF-L2", D4, "idle", "idle", "NO_ORDER", "No order", "无订单", 9999, 1),  # undecided
    ]
    for line, d, category, state, reason, en, zh, seconds, count in losses:
        conn.execute("insert into marts.mart_oee_loss_shift values "
                     "('ERF', %s, %s, %s, 'S1', %s, %s, %s, %s, %s, %s, %s)",
                     (line, f"{line}-M01", d, category, state, reason, en, zh, seconds, count))


def _dbt(dbname: str, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(DBT), *args, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
               "--target-path", str(workdir / "target"), "--log-path", str(workdir / "logs")]
    env = dict(os.environ, PGDATABASE=dbname, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    result = subprocess.run(command, cwd=DBT_DIR, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, f"dbt {args[0]} failed:\n{result.stdout[-8000:]}"
    return result


@pytest.fixture(scope="module")
def reporting_db(pg, tmp_path_factory) -> str:
    """A scratch warehouse with hand-made marts, the gate's history, and the reporting views
    built by `dbt build` (unit tests, contracts and data tests included)."""
    dbname = f"report_{uuid.uuid4().hex[:8]}"
    dsn = pg.create_database(dbname)
    ensure_warehouse(dsn)
    with psycopg.connect(dsn) as conn:
        for statement in MARTS_DDL.split(";"):
            conn.execute(statement)
        _mart_rows(conn)
        with conn.cursor() as cur:
            cur.executemany(
                "insert into dq.check_result (run_id, checked_at, check_name, check_kind, "
                "source_system, target, severity, site_code, production_day, failing_count) "
                "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", CHECK_RESULTS)
    # the reporting views and the gate's decision per scope they read (dq.scope_status)
    result = _dbt(dbname, tmp_path_factory.mktemp("dbt"), "build", "--select",
                  "path:models/reporting scope_status", "--threads", "2")
    assert "PASS=" in result.stdout and "ERROR=0" in result.stdout, result.stdout[-4000:]
    yield dsn
    pg.cluster.drop_database(dbname)


def _rows(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


# --------------------------------------------------------------------------- the views


def test_dbt_parse_lists_the_reporting_views():
    """The project's manifest (parsed again if a project file changed since the last parse:
    the one transform_dbt renders from) declares the reporting views as the report needs."""
    import json

    from factory_platform.dbt_project import MANIFEST_PATH, ensure_fresh_manifest

    ensure_fresh_manifest()
    manifest = json.loads(MANIFEST_PATH.read_text())
    models = {n["name"]: n for n in manifest["nodes"].values()
              if n["resource_type"] == "model" and n["path"].startswith("reporting/")}
    # every view is in the HTML report but rpt_production_line_day (for BI tools only)
    assert set(models) == {*VIEWS, "rpt_production_line_day"}
    for node in models.values():
        assert node["schema"] == "reporting"
        assert node["config"]["materialized"] == "view"
        assert node["description"] and all(c["description"] for c in node["columns"].values())
        if node["name"] == "rpt_source_health":  # the intake, not plant data: not gated
            assert [r["name"] for r in node["refs"]] == ["mart_source_health"]
            assert sorted(node["sources"]) == [["source_watch", "source_freshness"],
                                               ["source_watch", "source_not_seen"]]
            continue
        assert {"site_code"} <= set(node["columns"]) or node["name"] == "rpt_data_quality_status"
        # gated by the gate's decision per scope (the model scope_status), or its results
        assert (any(r["name"] == "scope_status" for r in node["refs"])
                or ["dq", "check_result"] in node["sources"]), node["name"]


def test_views_show_passed_and_flagged_scopes_only(reporting_db):
    oee = _rows(reporting_db, "select site_code, line_code, production_date, dq_flagged, "
                              "dq_failing_checks from reporting.rpt_oee_line_day")
    assert {r[:3] for r in oee} == SHOWN
    for site, line, d, flagged, checks in oee:
        assert flagged == (d == D2)
        assert checks == ("scada_flatline" if d == D2 else None)
    for view in ("rpt_quality_line_day", "rpt_energy_line_day", "rpt_production_line_day"):
        rows = _rows(reporting_db, f"select site_code, line_code, production_date, dq_flagged "
                                   f"from reporting.{view}")
        assert {r[:3] for r in rows} == SHOWN, view
        assert {r[:3] for r in rows if r[3]} == {r for r in SHOWN if r[2] == D2}, view
    assert _rows(reporting_db, "select first_pass_yield, scrap_ratio from "
                               "reporting.rpt_quality_line_day where line_code = 'ERF-L1' "
                               "and production_date = '2026-10-19'") == [(985 / 1000, 10 / 1000)]
    assert _rows(reporting_db, "select kwh_per_good_unit from reporting.rpt_energy_line_day "
                               "where line_code = 'ERF-L2' and production_date = '2026-10-20'"
                               ) == [(None,)]
    assert _rows(reporting_db, "select balance_date, book_quantity, physical_quantity, "
                               "accuracy_ratio, dq_flagged from reporting.rpt_inventory_accuracy "
                               "order by balance_date") == [
        (D1, 200, 198, 0.99, False), (D2, 150, 150, 1.0, True)]


def test_downtime_pareto_counts_losses_of_gated_scopes(reporting_db):
    rows = _rows(reporting_db, "select line_code, iso22400_time_category, reason_code, "
                               "reason_text_zh, downtime_hours, stop_count, pareto_rank, "
                               "cumulative_downtime_share, first_production_date, "
                               "last_production_date, dq_flagged "
                               "from reporting.rpt_downtime_pareto order by line_code")
    assert rows == [
        ("ERF-L1", "unplanned_downtime", "MECH", "机械故障", 1.5, 3, 1, 1.0, D1, D2, True),
        ("ERF-L2", "unplanned_downtime", "JAM", "卡料", 2.0, 4, 1, 1.0, D1, D1, False),
    ]


def test_data_quality_status_is_the_latest_run_of_every_check(reporting_db):
    rows = _rows(reporting_db, "select source_system, check_name, severity, run_id, "
                               "scopes_checked, scopes_failing, failing_count, status, "
                               "last_checked_at from reporting.rpt_data_quality_status "
                               "order by source_system")
    assert [r[:8] for r in rows] == [
        ("mes", "mes_orphan_confirmation", "error", "r1", 4, 1, 5, "fail"),
        ("scada", "scada_flatline", "warn", "r1", 4, 1, 7, "warn"),
        ("wms", "wms_negative_quantity", "error", "r0", 1, 0, 0, "pass"),
    ]
    assert rows[1][8] == datetime(2026, 10, 22, 5, 10, tzinfo=UTC)


def test_source_health_shows_the_latest_freshness_and_open_not_seen(reporting_db):
    """rpt_source_health reads the watch's tables live: the latest freshness run per source
    (an older run's warning is superseded), an open not-seen incident (a cleared one is not),
    and a source known only from freshness (never loaded)."""
    with psycopg.connect(reporting_db) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into dq.source_freshness (run_id, checked_at, source_name, table_name, "
            "status, max_loaded_at) values (%s, %s, %s, %s, %s, %s)",
            [("w1", "2026-10-23 05:40+00", "mes", "confirmations", "warn",
              "2026-10-23 04:00+00"),
             ("w2", "2026-10-23 05:50+00", "mes", "confirmations", "pass",
              "2026-10-23 05:45+00"),
             ("w2", "2026-10-23 05:50+00", "mes", "work_orders", "pass",
              "2026-10-23 05:45+00"),
             ("w2", "2026-10-23 05:50+00", "wms", "cycle_counts", "warn",
              "2026-10-22 05:00+00"),
             ("w2", "2026-10-23 05:50+00", "wms", "movements", "pass", "2026-10-23 05:00+00"),
             ("w2", "2026-10-23 05:50+00", "plm", "items", "runtime error", None)])
        cur.executemany(
            "insert into dq.source_not_seen (system, silent_entities, threshold_seconds, "
            "opened_at, cleared_at) values (%s, %s, 7800, %s, %s)",
            [("mes", '{"work_orders": "2026-10-23T03:00:00+00:00"}', "2026-10-23 03:41+00",
              "2026-10-23 04:10+00"),
             ("wms", ('{"movements": "2026-10-23T01:00:00+00:00", '
                      '"cycle_counts": "2026-10-23T01:00:00+00:00"}'),
              "2026-10-23 03:20+00", None)])
    rows = _rows(reporting_db, "select system, status, freshness_status, stale_table_count, "
                               "stale_tables, not_seen_since, not_seen_entities, "
                               "rows_loaded_count from reporting.rpt_source_health "
                               "order by system")
    assert rows == [
        ("mes", "ok", "pass", 0, None, None, None, 5000),
        ("plm", "attention", "error", 1, "items", None, None, 0),
        ("wms", "attention", "warn", 1, "cycle_counts",
         datetime(2026, 10, 23, 3, 20, tzinfo=UTC), "cycle_counts, movements", 700),
    ]


# --------------------------------------------------------------------------- the renderer

MARK = re.compile(r'<(circle|rect|g) class="mark ([^"]*)"[^>]*>(?:(?!</?title>).)*?'
                  r'<title>(.*?)</title>', re.DOTALL)


def charts(page: str) -> dict[str, dict]:
    """Per figure: its inner HTML, and its marks as (kind and classes, title) in drawing order."""
    found = {}
    for part in page.split('<figure data-chart="')[1:]:
        chart_id, body = part.split('"', 1)
        body = body.split("</figure>", 1)[0]
        found[chart_id] = {"html": body,
                           "marks": [(m.group(2), html.unescape(m.group(3)))
                                     for m in MARK.finditer(body)]}
    return found


FIXTURE_ROWS = {
    "rpt_oee_line_day": [
        ("ERF", "ERF-L1", D1, 0.8, 0.75, 0.8333333, 0.5, False, None),
        ("ERF", "ERF-L1", D2, 0.8, 0.9375, 0.8, 0.6, True, "scada_flatline"),
        ("ERF", "ERF-L2", D1, 0.9375, 0.8, 1.0, 0.75, False, None),
    ],
    "rpt_downtime_pareto": [
        ("ERF", "ERF-L1", "unplanned_downtime", "MECH", "Mechanical failure", "机械故障", 3.0, 3,
         1, 0.545, 0.545, 2, D1, D2, False),
        ("ERF", "ERF-L1", "unplanned_downtime", "JAM", "Material jam", "卡料", 2.5, 4, 2,
         0.455, 1.0, 1, D2, D2, True),
        ("ERF", "ERF-L2", "unplanned_downtime", "MECH", "Mechanical failure", "机械故障", 1.0, 2,
         1, 1.0, 1.0, 1, D1, D1, False),
    ],
    "rpt_quality_line_day": [
        ("ERF", "ERF-L1", D1, 1000, 975, 20, 5, 0.975, 0.02, 0.005, False, None),
        ("ERF", "ERF-L1", D2, 800, 792, 6, 2, 0.99, 0.0075, 0.0025, True, "scada_flatline"),
        ("ERF", "ERF-L2", D1, 0, 0, 0, 0, None, None, None, False, None),
    ],
    "rpt_inventory_accuracy": [
        ("ERF", "200012", D1, "kg", 200, 198, -2, 0.99, False, False, None),
        ("ERF", "200012", D2, "kg", 150, 150, 0, 1.0, True, True, "scada_flatline"),
        ("ERF", "200022", D1, "kg", 0, 0, 0, None, True, False, None),
    ],
    "rpt_energy_line_day": [
        ("ERF", "ERF-L1", D1, 1200.5, 975, 1200.5 / 975, False, None),
        ("ERF", "ERF-L1", D2, 990.0, 792, 1.25, True, "scada_flatline"),
        ("ERF", "ERF-L2", D1, 310.0, 0, None, False, None),
    ],
    "rpt_data_quality_status": [],
    "rpt_source_health": [
        ("mes", "ok", datetime(2026, 10, 23, 5, 45, tzinfo=UTC), 900.0,
         datetime(2026, 10, 23, 5, 45, tzinfo=UTC), 5000, 12, 0, 0, 0, 0, 0, 0, None,
         "pass", 0, None, datetime(2026, 10, 23, 5, 50, tzinfo=UTC), None, None),
        ("wms", "attention", datetime(2026, 10, 23, 5, tzinfo=UTC), 3600.0,
         datetime(2026, 10, 22, 5, tzinfo=UTC), 700, 30, 2, 1, 1, 0, 0, 0,
         "file_set_aside, file_waiting",
         "warn", 1, "cycle_counts", datetime(2026, 10, 23, 5, 50, tzinfo=UTC), None, None),
        ("scada", "attention", datetime(2026, 10, 23, 3, tzinfo=UTC), 10800.0,
         datetime(2026, 10, 23, 3, tzinfo=UTC), 900, 0, 0, 0, 0, 0, 0, 0, None,
         "error", 2, "alarms, tag_values", datetime(2026, 10, 23, 5, 50, tzinfo=UTC),
         datetime(2026, 10, 23, 5, 10, tzinfo=UTC), "alarms, tag_values"),
    ],
}


@pytest.fixture(scope="module")
def fixture_report(reporting_db, tmp_path_factory) -> Path:
    """The report of `report_fixture`: tables shaped exactly like the built reporting views
    (`like reporting.rpt_*`) holding known rows; no quality checks (the empty state)."""
    with psycopg.connect(reporting_db) as conn:
        conn.execute("create schema report_fixture")
        for view, rows in FIXTURE_ROWS.items():
            conn.execute(f"create table report_fixture.{view} (like reporting.{view})")
            for row in rows:
                marks = ", ".join(["%s"] * len(row))
                conn.execute(f"insert into report_fixture.{view} values ({marks})", row)
    out = tmp_path_factory.mktemp("report")
    return render_report(reporting_db, out, "manual__2026-10-23T06:00:00+00:00",
                         schema="report_fixture", generated_at=GENERATED_AT)


def test_report_files_and_header(fixture_report):
    run_dir = fixture_report.parent
    assert run_dir.name == "manual__2026-10-23T06_00_00_00_00" == safe_run_id(
        "manual__2026-10-23T06:00:00+00:00")
    assert fixture_report.name == "index.html"
    page = fixture_report.read_text(encoding="utf-8")
    assert (run_dir.parent / "latest.html").read_text(encoding="utf-8") == page
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "@font-face" not in page and "<link" not in page and "<img" not in page
    assert "<dt>Site</dt><dd>ERF</dd>" in page
    assert "<dt>Period</dt><dd>2026-10-19 – 2026-10-20</dd>" in page
    assert "manual__2026-10-23T06:00:00+00:00" in page
    assert "2026-10-23 06:00 UTC" in page


def test_report_opens_with_source_health_attention_first(fixture_report):
    page = fixture_report.read_text(encoding="utf-8")
    main = page.split('<main class="wrap">', 1)[1]
    assert main.startswith('<section class="source-health"><h2>Source health</h2>')
    section = main.split("</section>", 1)[0]
    assert "2 of 3 sources need attention (not seen: scada)" in section
    rows = [row.split("</tr>")[0] for row in section.split('<tr class="source ')[1:]]
    assert [r.split('"', 1)[0] for r in rows] == ["attention", "attention", "ok"]

    def cells(row: str) -> list[str]:
        return [html.unescape(re.sub(r"<[^>]+>", "", "<td" + c.split("</td>")[0]))
                for c in row.split("<td")[1:]]

    # not seen first, then the other sources needing attention, then the rest
    assert cells(rows[0]) == ["attention", "scada", "2026-10-23 03:00", "900", "0", "0", "0",
                              "0", "0", "error alarms, tag_values",
                              "2026-10-23 05:10 (alarms, tag_values)", ""]
    assert cells(rows[1]) == ["attention", "wms", "2026-10-23 05:00", "700", "30", "1", "1", "0",
                              "0", "warn cycle_counts", "", "file_set_aside, file_waiting"]
    assert cells(rows[2])[9:] == ["pass", "", ""]
    assert '<span class="pill fail">error</span>' in rows[0]
    assert '<span class="pill warn">warn</span>' in rows[1]


def test_report_charts_hold_exactly_the_expected_marks(fixture_report):
    found = charts(fixture_report.read_text(encoding="utf-8"))
    assert list(found) == list(CHART_IDS)

    assert found["oee-trend"]["marks"] == [
        ("point", ("ERF-L1 · 2026-10-19 · OEE 50.0% (availability 80.0%, effectiveness 75.0%, "
                  "quality 83.3%)")),
        ("point flagged", ("ERF-L1 · 2026-10-20 · OEE 60.0% (availability 80.0%, effectiveness "
                          "93.8%, quality 80.0%) · DQ flagged (scada_flatline)")),
        ("point", ("ERF-L2 · 2026-10-19 · OEE 75.0% (availability 93.8%, effectiveness 80.0%, "
                  "quality 100.0%)")),
    ]
    # the reasons summed over the lines, largest first, then the cumulative share
    assert found["downtime-pareto"]["marks"] == [
        ("bar", ("MECH Mechanical failure / 机械故障 (unplanned downtime): 4.0 h lost, 61.5% of "
                "all lost time, 5 stops — ERF-L1 3.0 h, ERF-L2 1.0 h")),
        ("bar flagged", ("JAM Material jam / 卡料 (unplanned downtime): 2.5 h lost, 38.5% of all "
                        "lost time, 4 stops — ERF-L1 2.5 h · includes DQ-flagged days")),
        ("point cumulative", "cumulative share up to MECH: 61.5%"),
        ("point cumulative", "cumulative share up to JAM: 100.0%"),
    ]
    assert ">卡料</tspan>" in found["downtime-pareto"]["html"]
    assert found["quality-trend"]["marks"] == [
        ("point", "ERF-L1 · 2026-10-19 · FPY 97.5% (1,000 produced)"),
        ("point flagged", ("ERF-L1 · 2026-10-20 · FPY 99.0% (800 produced) · DQ flagged "
                          "(scada_flatline)")),
        ("point", "ERF-L1 · 2026-10-19 · scrap 2.00% (1,000 produced)"),
        ("point flagged", ("ERF-L1 · 2026-10-20 · scrap 0.75% (800 produced) · DQ flagged "
                          "(scada_flatline)")),
    ]
    assert found["inventory-accuracy"]["marks"] == [
        ("cell", "200012 · 2026-10-19 · accuracy 99.00% (book 200 kg, counted 198 kg, diff -2 kg)"),
        ("cell flagged", ("200012 · 2026-10-20 · accuracy 100.00% (book 150 kg, counted 150 kg, "
                         "diff 0 kg) · DQ flagged (scada_flatline)")),
        ("cell", "200022 · 2026-10-19 · accuracy n/a (book 0 kg, counted 0 kg, diff 0 kg)"),
    ]
    assert found["energy-intensity"]["marks"] == [
        ("point", "ERF-L1 · 2026-10-19 · 1.231 kWh per good unit (1,200.5 kWh / 975 good)"),
        ("point flagged", ("ERF-L1 · 2026-10-20 · 1.250 kWh per good unit (990.0 kWh / 792 good)"
                          " · DQ flagged (scada_flatline)")),
    ]
    dq = found["data-quality"]
    assert dq["marks"] == []
    assert "<svg" in dq["html"] and "No quality checks have been recorded yet." in dq["html"]
    for chart_id, chart in found.items():
        assert f'data-marks="{len(chart["marks"])}"' in fixture_report.read_text(
            encoding="utf-8").split(f'data-chart="{chart_id}"', 1)[1][:40]


def test_report_of_the_built_views(reporting_db, tmp_path):
    """The renderer reads the dbt-built views: only the gated line-days are drawn, the blocked
    one and the undecided one are not, and the quality tiles show each source's status."""
    path = render_report(reporting_db, tmp_path, "scheduled__2026-10-23T06:00:00+00:00",
                         generated_at=GENERATED_AT)
    found = charts(path.read_text(encoding="utf-8"))
    oee_titles = [t for _, t in found["oee-trend"]["marks"]]
    assert len(oee_titles) == len(SHOWN)
    assert {t.split(" · ")[0] + " " + t.split(" · ")[1] for t in oee_titles} == {
        f"{line} {d.isoformat()}" for _, line, d in SHOWN}
    assert [k for k, _ in found["oee-trend"]["marks"]].count("point flagged") == 2
    assert len(found["downtime-pareto"]["marks"]) == 4
    assert len(found["quality-trend"]["marks"]) == 2 * len(SHOWN)
    assert len(found["inventory-accuracy"]["marks"]) == 2
    assert len(found["energy-intensity"]["marks"]) == len(SHOWN) - 1  # one without good pieces
    assert [(k, t.split(":")[0]) for k, t in found["data-quality"]["marks"]] == [
        ("tile", "mes"), ("tile", "scada"), ("tile", "wms")]
    page = path.read_text(encoding="utf-8")
    assert '<span class="pill fail">fail</span></td><td>mes</td>' in page
    assert "<dt>Site</dt><dd>ERF, SZX</dd>" in page


# --------------------------------------------------------------------------- in a browser


def test_report_in_headless_chromium(fixture_report):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    expected = {chart_id: len(chart["marks"])
                for chart_id, chart in charts(fixture_report.read_text(encoding="utf-8")).items()}
    screenshot = fixture_report.with_name("screenshot.png")
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(fixture_report.as_uri())
            page.screenshot(path=str(screenshot), full_page=True)
            figures = page.evaluate("""() => [...document.querySelectorAll('figure[data-chart]')]
                .map(f => {
                    const svg = f.querySelector('svg');
                    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
                    return {id: f.dataset.chart, width: box.width, height: box.height,
                            marks: svg ? svg.querySelectorAll('.mark').length : -1,
                            titled: svg ? [...svg.querySelectorAll('.mark')]
                                .filter(m => m.querySelector('title')?.textContent).length : -1,
                            text: f.textContent};
                })""")
            title = page.title()
        finally:
            browser.close()
    assert [f["id"] for f in figures] == list(CHART_IDS)
    for figure in figures:
        assert figure["width"] > 300 and figure["height"] > 50, figure["id"]
        assert figure["marks"] == figure["titled"] == expected[figure["id"]], figure["id"]
    by_id = {f["id"]: f for f in figures}
    assert "卡料" in by_id["downtime-pareto"]["text"]
    assert "No quality checks have been recorded yet." in by_id["data-quality"]["text"]
    assert title.startswith("Factory report · ERF")
    assert requests and all(url.startswith("file://") for url in requests), requests
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1100 and height > 1500, (width, height)
    assert len(png) > 50_000


# --------------------------------------------------------------------------- the reader role


def test_reporting_reader_reads_reporting_only(reporting_db):
    login = f"report_bi_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(reporting_db, autocommit=True) as conn:
        ensure_reporting_reader(conn)
        ensure_reporting_reader(conn)  # idempotent
        assert conn.execute("select rolcanlogin from pg_roles where rolname = "
                            "'reporting_reader'").fetchone() == (False,)
        conn.execute(f"create role {login} login password '{password}' in role reporting_reader")
        # a view created after the grant (dbt re-creates its views on every run) is readable too
        conn.execute("create view reporting.rpt_later as select 1 as one")
    params = conninfo_to_dict(reporting_db)
    bi_dsn = make_conninfo(**{**params, "user": login, "password": password})
    try:
        with psycopg.connect(bi_dsn, autocommit=True) as bi:
            assert bi.execute("select count(*) from reporting.rpt_oee_line_day").fetchone() == (
                len(SHOWN),)
            assert bi.execute("select one from reporting.rpt_later").fetchone() == (1,)
            for forbidden in ("select * from marts.mart_oee_line_day",
                              "select * from dq.check_result",
                              "create table reporting.mine (x int)"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    bi.execute(forbidden)
    finally:
        with psycopg.connect(reporting_db, autocommit=True) as conn:
            conn.execute("drop view reporting.rpt_later")
            conn.execute(f"drop role {login}")
