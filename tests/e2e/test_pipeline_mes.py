"""The pipeline through Airflow: every extract_<system> → transform_dbt → publish_reporting,
compared with the simulator's truth; idempotent re-runs; a transform run after one source's
batches builds only what that source feeds; a failing gate stops publishing."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import psycopg
import pytest
from _pipeline import dbt, empty_erp_inbox, reset_platform_schemas

from .conftest import (
    extract_every_system,
    extract_whole_world,
    run_dag,
    task_states,
)

pytestmark = pytest.mark.slow

# Volatile bookkeeping columns that legitimately change on a re-run (wall-clock times).
VOLATILE = {"_extracted_at", "published_at", "published_by_run", "started_at", "finished_at",
            "run_id", "quarantined_at", "quarantine_id", "first_seen_at",
            "rows_replaced",  # a re-run replaces what the first run loaded: that is the point
            "extracted_at", "_file_id",  # wall-clock load time; historian file surrogate key
            # a source incident seen again is counted, not opened twice: the set stays the same
            "last_seen_at", "times_seen", "alerted_at"}


def run_pipeline(dagbag, plant):
    extracts = extract_every_system(dagbag, plant)
    transform = run_dag(dagbag, "transform_dbt")
    publish = run_dag(dagbag, "publish_reporting")
    to_erp = run_dag(dagbag, "publish_erp")
    return (*extracts, transform, publish, to_erp)


def differences(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


@pytest.fixture(scope="module")
def pipeline(dagbag, plant, warehouse_dsn, pg):
    import shutil

    reset_platform_schemas(warehouse_dsn)
    empty_erp_inbox(pg.cluster.dsn("erp"))  # as the superuser: no platform role may truncate
    shutil.rmtree(os.environ["SFDP_OUTBOUND_DIR"], ignore_errors=True)
    shutil.rmtree(os.environ["SFDP_REPORTS_DIR"], ignore_errors=True)
    return run_pipeline(dagbag, plant)


def test_every_dag_run_succeeded(pipeline):
    for dag_run in pipeline:
        assert str(dag_run.state) == "success", (dag_run.dag_id, task_states(dag_run))


def test_reporting_equals_truth_per_line_and_day(pipeline, warehouse_dsn):
    diff = differences(warehouse_dsn, """
        select coalesce(r.line_code, t.line_code), coalesce(r.production_date, t.production_date),
               r.good_count, t.good_qty, r.scrap_count, t.scrap_qty, r.rework_count, t.rework_qty
        from reporting.rpt_production_line_day r
        full outer join truth.production_line_day t
          on t.site_code = r.site_code and t.line_code = r.line_code
         and t.production_date = r.production_date
        where r.line_code is null or t.line_code is null
           or r.good_count <> t.good_qty or r.scrap_count <> t.scrap_qty
           or r.rework_count <> t.rework_qty
        order by 1, 2
    """)
    assert diff == [], f"{len(diff)} line-days differ from the truth; first: {diff[:5]}"
    with psycopg.connect(warehouse_dsn) as conn:
        rows, good = conn.execute(
            "select count(*), sum(good_count) from reporting.rpt_production_line_day").fetchone()
    assert rows > 0 and good > 0


def test_every_extracted_batch_is_audited(pipeline, warehouse_dsn):
    with psycopg.connect(warehouse_dsn) as conn:
        audited = dict(conn.execute(
            "select entity, sum(rows_loaded) from ops.load_audit where system = 'mes' "
            "group by entity").fetchall())
        for entity, loaded in audited.items():
            actual = conn.execute(f"select count(*) from raw_mes.{entity}").fetchone()[0]
            assert actual == loaded, entity
        read, loaded, quarantined, dupes = conn.execute(
            "select sum(rows_read), sum(rows_loaded), sum(rows_quarantined), "
            "sum(duplicates_skipped) from ops.load_audit").fetchone()
        assert read == loaded + quarantined + dupes
        assert conn.execute("select count(*) from ops.quarantine").fetchone()[0] == quarantined
    assert len(audited) == 6


def seconds(dag_run) -> float:
    return (dag_run.end_date - dag_run.start_date).total_seconds()


def relation_oids(dsn: str, names: list[str]) -> dict[str, int]:
    """pg_class oids of the dbt relations named (dbt replaces a table or a view it builds with a
    new relation: a new oid; an incremental model keeps its table)."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "select c.relname, c.oid::bigint from pg_class c join pg_namespace n "
            "on n.oid = c.relnamespace where c.relname = any(%s) and n.nspname in "
            "('staging', 'conformed', 'marts', 'publish', 'reporting', 'dq', 'snapshots')",
            (names,)).fetchall())


def test_a_run_after_only_qms_batches_builds_only_what_qms_feeds(pipeline, dagbag, plant,
                                                                 warehouse_dsn, monkeypatch):
    """After the pipeline's run, only QMS is extracted again; a transform run that processes
    what changed (as an asset-triggered run does; dag.test() makes manual runs, hence the conf)
    builds, in its one dbt process, exactly the models downstream of the QMS sources and the
    bookkeeping marts — `dbt ls` of that selection says which — and reports each of them; every
    other model's task is skipped, and dbt did not touch its relation (same oid)."""
    from factory_platform import transform_window
    from factory_platform.dbt_project import MANIFEST_PATH
    from factory_platform.transform_watch import DbtNodeResult

    # the pipeline's extractions finished seconds before its transform run looked; the overlap
    # (10 min, for a batch committing while a run looks) would hand them to this run again
    monkeypatch.setattr(transform_window, "OVERLAP", timedelta(0))
    manifest = json.loads(MANIFEST_PATH.read_text())
    nodes = {n["name"]: n for n in manifest["nodes"].values()
             if n["resource_type"] in ("model", "seed", "snapshot")}
    replaced = [name for name, node in nodes.items()  # relations dbt replaces when it builds
                if node["config"]["materialized"] in ("table", "view")]
    oids = relation_oids(warehouse_dsn, replaced)

    # QMS again, as the pipeline loaded it (a narrower reload would leave raw_qms's rows with
    # other batch ids, which the next test compares)
    qms = extract_whole_world(dagbag, plant, "extract_qms")
    transform = run_dag(dagbag, "transform_dbt", run_conf={"changed_only": True})

    assert str(qms.state) == str(transform.state) == "success", task_states(transform)
    # what dbt lists for the QMS entities that run loaded rows of, the ERP's inbound postings
    # (publish_erp's reconciliation loaded them after the pipeline's transform run) and the
    # bookkeeping marts
    with psycopg.connect(warehouse_dsn) as conn:
        entities = [e for (e,) in conn.execute(
            "select distinct entity from ops.load_audit where run_id = %s and system = 'qms' "
            "and rows_loaded + rows_replaced > 0", (qms.run_id,))]
    assert "inspection_results" in entities
    selection = ([f"source:qms.{entity}+" for entity in entities]
                 + ["source:erp.inbound_postings+"]
                 + transform_window.run_selection([], manifest).split())
    listed = dbt("ls", "--quiet", "--output", "name", "--select", *selection,
                 "--exclude", "tag:gate", "--resource-type", "model", "--resource-type", "seed",
                 "--resource-type", "snapshot")
    expected = {line.strip() for line in listed.stdout.splitlines() if line.strip() in nodes}
    assert {"stg_qms__inspection_results", "fct_inspection_result", "mart_quality",
            "mart_source_health"} <= expected
    dag = dagbag.get_dag("transform_dbt")
    names = {t.task_id: t.unique_id.split(".")[-1] for t in dag.tasks
             if isinstance(t, DbtNodeResult)}
    states = task_states(transform)
    built = {names[task] for task, state in states.items() if task in names and state == "success"}
    skipped = {names[task] for task, state in states.items() if task in names and state == "skipped"}
    assert built == expected
    assert built | skipped == set(names.values())
    assert {"stg_mes__confirmations", "fct_operation_confirmation", "mart_production_line_day",
            "mart_oee_shift", "stg_scada__tag_values", "stg_erp__materials"} <= skipped
    everything = pipeline[-3]  # the pipeline's transform run: the whole project
    print(f"\ntransform_dbt: everything {seconds(everything):.0f} s; changed only (QMS): "
          f"{len(built)} of {len(names)} models, seeds and snapshots built in "
          f"{seconds(transform):.0f} s")
    after = relation_oids(warehouse_dsn, replaced)
    untouched = {name for name in replaced if name in oids and after.get(name) == oids[name]}
    assert untouched == {name for name in replaced if name in oids} - expected


# Marts about the loads themselves: they report when the last loads ran, so a re-run changes them.
VOLATILE_TABLES = {"marts.mart_source_health", "marts.mart_data_quality"}  # wall clock; gate history


def snapshot(dsn: str) -> dict[str, tuple]:
    """Per table the pipeline writes: row count and an order-independent 64-bit hash sum of
    its rows, without volatile bookkeeping columns (computed in the database: the historian
    alone has over a million rows)."""
    tables: dict[str, tuple] = {}
    with psycopg.connect(dsn) as conn:
        names = conn.execute("""
            select table_schema, table_name from information_schema.tables
            where (table_schema like 'raw\\_%' or table_schema in
                   ('ops', 'staging', 'conformed', 'marts', 'reporting'))
              and (table_type = 'BASE TABLE' or table_schema like 'raw\\_%')
              and table_name not like '%\\_\\_files'
            order by 1, 2""").fetchall()
        for schema, table in names:
            if f"{schema}.{table}" in VOLATILE_TABLES:
                continue
            columns = [c for (c,) in conn.execute(
                "select column_name from information_schema.columns where table_schema = %s "
                "and table_name = %s order by ordinal_position", (schema, table))
                if c not in VOLATILE]
            cols = ", ".join(f'"{c}"' for c in columns)
            tables[f"{schema}.{table}"] = conn.execute(
                f"select count(*), coalesce(sum(hashtextextended(r::text, 0)), 0) "
                f"from (select {cols} from {schema}.{table}) r").fetchone()
    return tables


def test_running_the_same_interval_twice_changes_nothing(pipeline, dagbag, plant, warehouse_dsn):
    """Every extraction DAG, every model and both publishing DAGs again over the same data.
    The models are rebuilt by one `dbt build` of what transform_dbt's tasks build (the same
    project, selection and vars): the DAG itself ran in `pipeline`, and its ~90 one-model
    tasks would add minutes to the suite without testing anything more about the data; nor
    would the data tests, which `pipeline`'s run passed on the same rows (unit tests kept)."""
    before = snapshot(warehouse_dsn)
    assert sum(count for count, _ in before.values()) > 1_000_000
    extracts = extract_every_system(dagbag, plant)
    dbt("build", "--exclude", "tag:gate", "test_type:data", "--threads", "4")
    again = [*extracts, run_dag(dagbag, "publish_reporting"), run_dag(dagbag, "publish_erp")]
    assert all(str(run.state) == "success" for run in again)
    after = snapshot(warehouse_dsn)
    assert after.keys() == before.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert changed == []


def test_erp_holds_every_confirmation_once_and_reconciles(pipeline, warehouse_dsn):
    """After the full 14-day run: every open scope's confirmations are in the ERP exactly
    once (the ERP's own inbound table: no idempotency key twice) and the reconciliation mart
    shows no difference between MES, published and ERP-acknowledged quantities."""
    from factory_platform.warehouse import warehouse_dsn as connection_dsn

    with psycopg.connect(connection_dsn("erp_db")) as erp:
        keys, distinct, accepted = erp.execute(
            "select count(*), count(distinct idempotency_key), "
            "count(*) filter (where status = 'accepted' and message_type = "
            "'production_confirmation') from erp.inbound_postings").fetchone()
    assert keys == distinct > 0
    with psycopg.connect(warehouse_dsn) as conn:
        expected = conn.execute("""
            select count(*) from publish.pub_erp__production_confirmation p
            join dq.scope_status s on s.site_code = p.site_code and s.production_day = p.production_date
            where s.decision <> 'blocked'""").fetchone()[0]
        blocked = conn.execute(
            "select count(*) from dq.scope_status where decision = 'blocked'").fetchone()[0]
        unreconciled = conn.execute(
            "select order_number, mes_good_qty, published_good_qty, erp_good_qty "
            "from marts.mart_erp_reconciliation where not is_reconciled").fetchall()
        truth_good = conn.execute("select sum(good_qty) from truth.production_line_day").fetchone()[0]
        erp_good = conn.execute(
            "select sum(erp_good_qty) from marts.mart_erp_reconciliation").fetchone()[0]
    assert accepted == expected
    assert blocked == 0
    assert unreconciled == []
    assert erp_good == truth_good


def test_b2mml_documents_of_the_run_validate(pipeline):
    from pathlib import Path

    from factory_platform.b2mml import validate

    documents = sorted(Path(os.environ["SFDP_OUTBOUND_DIR"], "b2mml").rglob("*.xml"))
    assert len(documents) >= 14  # one per site and production day
    for document in documents:
        validate(document.read_bytes())


def test_the_run_rendered_its_html_report_with_every_chart(pipeline, warehouse_dsn):
    import re
    from pathlib import Path

    html = (Path(os.environ["SFDP_REPORTS_DIR"]) / "latest.html").read_text(encoding="utf-8")
    charts = dict(re.findall(r'<figure[^>]*data-chart="([a-z-]+)"[^>]*>(.*?)</figure>', html,
                                  re.DOTALL))
    assert set(charts) == {"oee-trend", "downtime-pareto", "quality-trend",
                           "inventory-accuracy", "energy-intensity", "data-quality"}
    with psycopg.connect(warehouse_dsn) as conn:
        line_days = conn.execute("select count(*) from reporting.rpt_oee_line_day").fetchone()[0]
    assert line_days >= 3 * 14  # 3 lines × 14 production days, all gated through
    assert charts["oee-trend"].count("<title>") >= line_days


def test_quarantine_holds_exactly_the_unusable_confirmations(pipeline, warehouse_dsn):
    """Negative quantities and null mandatory fields end in ops.quarantine with a reason —
    exactly the confirmations the truth lists for quarantine, no more, no fewer."""
    with psycopg.connect(warehouse_dsn) as conn:
        quarantined = dict(conn.execute(
            "select record_ref, reason from ops.quarantine "
            "where system = 'mes' and entity = 'confirmations'").fetchall())
        expected = {r for (r,) in conn.execute(
            "select record_id from truth.injected_defects where system = 'mes' "
            "and entity = 'confirmations' and action = 'quarantine'")}
    assert expected, "the test world must inject unusable confirmations"
    assert set(quarantined) == expected
    assert all("machine_code" in reason or "below its minimum" in reason
               for reason in quarantined.values()), quarantined


def test_a_failing_gate_keeps_publishing_from_running(pipeline, dagbag, plant, warehouse_dsn):
    """A negative scrap count reaches the mart; its error-severity test fails; the gate does
    not open (the run is failed), so the gated-marts asset gets no event: neither
    publish_reporting nor publish_erp runs on it. Last in the module: the models it rebuilds
    keep the tampered row. (reporting holds no copy of the mart any more: its rpt_* views show
    the marts gated by the latest decision per scope.)"""
    from pathlib import Path

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from factory_platform.assets import GATED_MARTS_URI

    def gate_events() -> int:
        with create_session() as session:
            return session.query(AssetEvent).join(
                AssetModel, AssetModel.id == AssetEvent.asset_id).filter(
                AssetModel.uri == GATED_MARTS_URI).count()

    report = Path(os.environ["SFDP_REPORTS_DIR"]) / "latest.html"
    rendered = report.read_bytes()
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("""
            update raw_mes.confirmations set scrap_qty = -100000
            where confirmation_id = (select min(confirmation_id) from raw_mes.confirmations)""")
    events_before = gate_events()
    try:
        transform = run_dag(dagbag, "transform_dbt")  # a manual run: the whole project
        states = task_states(transform)
        assert str(transform.state) == "failed"
        assert states["dbt.dbt_producer_watcher"] == "failed"  # its dbt build failed
        # the mart's task names the failing test; what is downstream of it was not built
        assert states["dbt.mart_production_line_day_run"] == "failed"
        assert states["dbt.rpt_production_line_day_run"] == "upstream_failed"
        assert states["dbt_gate_checks"] == "upstream_failed"
        assert states["quality_gate"] == "failed"
        assert gate_events() == events_before
        with psycopg.connect(warehouse_dsn) as conn:
            mart_min = conn.execute(
                "select min(scrap_count) from marts.mart_production_line_day").fetchone()[0]
        assert mart_min < 0  # the bad number did reach the mart …
        assert report.read_bytes() == rendered  # … and no report was published from it
    finally:
        extract_whole_world(dagbag, plant)  # the source's numbers replace the tampered row
