"""Least privilege, gated reading, secrets (#12 items 3–5), against the test cluster as the
set-up left it (the same `factory_platform.provision` as `make run`).

Each job's role can do its job and nothing beyond: the loader cannot write the marts, the
publisher cannot write raw (nor read the ERP: it may only call erp.post_message), the reporting
reader reads the gated `reporting.rpt_*` views and nothing else, connects to the warehouse only
and never sees a blocked scope; the plant's roles cannot read the warehouse's raw; no role runs
`COPY … FROM PROGRAM`. No secret is on a process command line, in a log the platform wrote, in
an alert or a quarantine row.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import threading
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psycopg
import pytest
from factory_platform import roles
from launcher.settings import PROJECT_ROOT, load_or_create_secrets
from launcher.settings import test_instance as _test_instance
from psycopg import errors

INSTANCE = _test_instance()
SECRET = load_or_create_secrets(INSTANCE)
LOGIN_DATABASE = {
    roles.LOADER: "warehouse", roles.TRANSFORMER: "warehouse", roles.PUBLISHER: "warehouse",
    roles.REPORTER: "warehouse", roles.AIRFLOW: "airflow", roles.PLANT_ERP: "erp",
    roles.PLANT_EAM: "eam", roles.PLANT_TRUTH: "warehouse",
}
DATABASES = ("warehouse", "airflow", "erp", "eam", "postgres", "template1")
MAY_CONNECT = {  # role: databases it may connect to
    roles.LOADER: {"warehouse", "erp", "eam"}, roles.TRANSFORMER: {"warehouse"},
    roles.PUBLISHER: {"warehouse", "erp"}, roles.REPORTER: {"warehouse"},
    roles.AIRFLOW: {"airflow"}, roles.PLANT_ERP: {"erp"}, roles.PLANT_EAM: {"eam"},
    roles.PLANT_TRUTH: {"warehouse"},
}


def login(role: str, dbname: str | None = None) -> str:
    return psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=INSTANCE.pg_port, user=role, dbname=dbname or LOGIN_DATABASE[role],
        password=SECRET[roles.PASSWORD_ENV[role]])


@contextmanager
def connected(role: str, dbname: str | None = None):
    with psycopg.connect(login(role, dbname), autocommit=True) as conn:
        yield conn


def refused(conn, statement: str, params=None) -> str:
    """Run `statement`, which must fail for lack of privilege; return the error message."""
    with pytest.raises(errors.InsufficientPrivilege) as failure:
        conn.execute(statement, params)
    return str(failure.value)


@pytest.fixture(scope="module")
def probes(warehouse_dsn):
    """A relation in each layer, made by its owning role (as dbt or the loader would)."""
    made = []
    with connected(roles.LOADER) as conn:  # a raw schema of its own, as for a new system
        conn.execute("create schema if not exists raw_privprobe")
        conn.execute("create table if not exists raw_privprobe.records "
                     "(site_code text, production_date date, n int)")
    with connected(roles.TRANSFORMER) as conn:
        for schema in ("staging", "marts", "publish", "reporting", "dq", "quality"):
            name = f"{schema}.sfdp_probe_{uuid.uuid4().hex[:6]}"
            conn.execute(f"create table {name} (site_code text, production_date date, n int)")
            made.append((roles.TRANSFORMER, name))
    with connected(roles.PLANT_TRUTH) as conn:
        conn.execute("create schema if not exists truth")
        name = f"truth.sfdp_probe_{uuid.uuid4().hex[:6]}"
        conn.execute(f"create table {name} (n int)")
        made.append((roles.PLANT_TRUTH, name))
    yield {"raw": "raw_privprobe.records", **{name.split(".")[0]: name for _, name in made}}
    for role, name in made:
        with connected(role) as conn:
            conn.execute(f"drop table if exists {name}")
    with connected(roles.LOADER) as conn:
        conn.execute("drop schema raw_privprobe cascade")


# --------------------------------------------------------------------------- roles


def test_no_role_of_the_platform_or_the_plant_has_powers_beyond_its_grants(warehouse_dsn):
    with psycopg.connect(warehouse_dsn) as conn:
        rows = conn.execute(
            "select rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication, "
            "array(select b.rolname from pg_auth_members m join pg_roles b on b.oid = m.roleid "
            "      where m.member = r.oid order by 1) "
            "from pg_roles r where rolname = any(%s) order by 1", (list(roles.ALL_ROLES),)
        ).fetchall()
    assert {r[0] for r in rows} == set(roles.ALL_ROLES)
    for name, *powers, member_of in rows:
        assert not any(powers), name
        assert member_of == ([roles.READER] if name == roles.REPORTER else []), name


@pytest.mark.parametrize("role", [*roles.PLATFORM_LOGINS, *roles.PLANT_LOGINS])
def test_no_role_runs_copy_from_program_or_reads_server_files(role, tmp_path):
    marker = tmp_path / "ran"
    with connected(role) as conn:
        message = refused(conn, f"copy pg_catalog.pg_am from program 'touch {marker}'")
        assert "pg_execute_server_program" in message
        refused(conn, f"copy (select 1) to program 'touch {marker}'")
        assert "pg_read_server_files" in refused(conn, "copy pg_catalog.pg_am from '/etc/passwd'")
        refused(conn, "select pg_read_file('/etc/passwd')")
    assert not marker.exists()


@pytest.mark.parametrize("role", [*roles.PLATFORM_LOGINS, *roles.PLANT_LOGINS])
def test_each_role_connects_only_to_its_databases(role):
    for dbname in DATABASES:
        if dbname in MAY_CONNECT[role]:
            with connected(role, dbname) as conn:
                assert conn.execute("select current_user").fetchone() == (role,)
        else:
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(login(role, dbname)).close()


@pytest.mark.parametrize("role", [roles.LOADER, roles.TRANSFORMER, roles.PUBLISHER])
def test_a_task_role_finds_the_warehouse_current_and_issues_no_ddl(role, warehouse_dsn):
    """Loads, the gate and the publisher call ensure_warehouse_once: after the set-up it must
    see the warehouse current whatever its role may read (else it would try DDL and fail)."""
    from factory_platform.warehouse import _is_current, ensure_warehouse

    ensure_warehouse(warehouse_dsn)  # as the set-up does
    with connected(role) as conn:
        assert _is_current(conn)
    ensure_warehouse(login(role))


def test_the_first_load_after_its_raw_schema_was_dropped_recreates_it(pg):
    """An operator drops raw_<system> to reload it: the next load's ensure_warehouse, as the
    loader, creates that schema and issues no ops DDL (the loader may not create tables in
    ops, and `create table if not exists` checks that before it looks). Before, that first
    load failed with 'permission denied for schema ops' and only its retry went through.
    On a warehouse of its own, so no other test's raw schema goes."""
    from factory_platform.warehouse import _is_current, ensure_warehouse

    name = "privtest_dropped_raw"
    dsn = pg.create_database(name)
    try:
        ensure_warehouse(dsn)  # as the set-up does: every schema, ops, the role matrix
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"grant connect, temporary, create on database {name} "
                         f"to {roles.LOADER}")
            conn.execute("drop schema raw_scada")
            ops_before = conn.execute("select count(*) from pg_tables where schemaname = 'ops'"
                                      ).fetchone()
        with connected(roles.LOADER, name) as conn:
            assert not _is_current(conn)
        ensure_warehouse(login(roles.LOADER, name))
        with connected(roles.LOADER, name) as conn:
            assert _is_current(conn)
            owner = conn.execute("select nspowner::regrole::text from pg_namespace "
                                 "where nspname = 'raw_scada'").fetchone()
            ops_after = conn.execute("select count(*) from pg_tables where schemaname = 'ops'"
                                     ).fetchone()
        assert owner == (roles.LOADER,)
        assert ops_after == ops_before
    finally:
        pg.cluster.drop_database(name)


def test_every_schema_dbt_writes_exists_and_belongs_to_the_transformer(warehouse_dsn):
    """The transformer may not create schemas: each one the dbt project names (+schema /
    schema: configs, its profile's default) must be there after the set-up, and its own."""
    from factory_platform.warehouse import schemas

    project = PROJECT_ROOT / "dbt_project"
    texts = [p.read_text() for p in project.rglob("*.yml") if "target" not in p.parts]
    texts += [p.read_text() for p in (project / "models").rglob("*.sql")]
    named = {m for text in texts for m in re.findall(r"\+?schema:\s*([a-z_]+)\s*$", text, re.MULTILINE)}
    named |= {m for text in texts for m in re.findall(r"schema\s*=\s*'([a-z_]+)'", text)}
    sources = {"dq", "ops", "truth"} | {s for s in schemas() if s.startswith("raw_")}
    written = named - sources
    assert {"staging", "conformed", "marts", "publish", "reporting", "dq_failures",
            "snapshots"} <= written
    with psycopg.connect(warehouse_dsn) as conn:
        owners = dict(conn.execute("select nspname, nspowner::regrole::text from pg_namespace "
                                   "where nspname = any(%s)", (sorted(written),)).fetchall())
    assert owners == dict.fromkeys(written, roles.TRANSFORMER)


def test_the_loader_loads_but_cannot_write_the_layers(probes):
    with connected(roles.LOADER) as conn:
        conn.execute("begin")
        conn.execute("insert into ops.load_audit (batch_id, system, entity, interval_start, "
                     "interval_end, window_start, source, rows_read, rows_loaded, "
                     "rows_quarantined, duplicates_skipped, rows_replaced, started_at) values "
                     "('privtest', 'x', 'y', now(), now(), now(), 's', 0, 0, 0, 0, 0, now())")
        conn.execute("rollback")
        for layer in ("marts", "staging", "publish", "reporting"):
            refused(conn, f"insert into {probes[layer]} values ('ERF', current_date, 1)")
            refused(conn, f"drop table {probes[layer]}")
            refused(conn, f"create table {layer}.sfdp_loader_was_here (n int)")
        refused(conn, "insert into dq.check_result (run_id, check_name, check_kind, "
                      "source_system, target, severity, site_code, production_day, "
                      "failing_count) values ('x', 'x', 'dbt', 'x', 'x', 'error', 'x', "
                      "current_date, 0)")
        refused(conn, "update ops.erp_outbox set state = 'accepted'")
        refused(conn, "delete from ops.transform_run")
        # a schema of its own is raw_<system>, nothing else
        refused(conn, "create schema sfdp_loader_was_here")
        conn.execute("create schema raw_privtest")
        conn.execute("drop schema raw_privtest")


def test_the_transformer_reads_raw_and_cannot_write_it(probes):
    with connected(roles.TRANSFORMER) as conn:
        conn.execute(f"select count(*) from {probes['raw']}")
        conn.execute("select count(*) from ops.load_audit")
        refused(conn, f"insert into {probes['raw']} values ('ERF', current_date, 1)")
        refused(conn, "delete from ops.quarantine")
        refused(conn, "insert into ops.erp_outbox (idempotency_key) values ('x')")
        refused(conn, "create schema raw_sfdp_transformer_was_here")


def test_the_publisher_reads_publish_and_dq_and_writes_the_outbox_only(probes):
    with connected(roles.PUBLISHER) as conn:
        conn.execute(f"select count(*) from {probes['publish']}")
        # dq: the gate's results, and its decision per scope (dq.scope_status, a view dbt builds
        # as the transformer, like this probe)
        conn.execute("select count(*) from dq.check_result")
        conn.execute(f"select count(*) from {probes['dq']}")
        conn.execute("begin")
        conn.execute("insert into ops.erp_outbox (idempotency_key, message_type, business_key, "
                     "version, kind, content_hash, payload) values "
                     "('privtest', 't', 'k', 1, 'posting', 'h', '{}')")
        conn.execute("rollback")
        refused(conn, f"insert into {probes['raw']} values ('ERF', current_date, 1)")
        refused(conn, f"select count(*) from {probes['raw']}")
        refused(conn, f"select count(*) from {probes['marts']}")
        refused(conn, f"select count(*) from {probes['quality']}")  # the gate's batches
        refused(conn, f"insert into {probes['publish']} values ('ERF', current_date, 1)")
        refused(conn, "insert into ops.load_audit (batch_id) values ('x')")
        refused(conn, "delete from dq.check_result")


def test_the_reader_reads_nothing_but_the_reporting_views(probes):
    with connected(roles.REPORTER) as conn:
        conn.execute(f"select count(*) from {probes['reporting']}")  # reporting: readable
        for relation in ("ops.load_audit", "ops.quarantine", "ops.erp_outbox", "dq.check_result",
                         "dq.scope_status", probes["dq"], probes["quality"], probes["raw"],
                         probes["marts"],
                         probes["staging"], probes["publish"], probes["truth"]):
            refused(conn, f"select * from {relation} limit 1")
        refused(conn, "create temp table t (n int)")
        refused(conn, "create table reporting.mine (n int)")
        # every relation it can read in the warehouse is in reporting
        readable = conn.execute(
            "select n.nspname || '.' || c.relname from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where c.relkind in ('r', 'p', 'v', 'm', 'f') "
            "and n.nspname not in ('pg_catalog', 'information_schema') "
            "and has_table_privilege(c.oid, 'select')").fetchall()
    assert {r.split(".")[0] for (r,) in readable} <= {"reporting"}, readable


def test_the_plant_writes_its_own_and_cannot_read_the_warehouse_raw(probes):
    with connected(roles.PLANT_TRUTH) as conn:
        conn.execute(f"select count(*) from {probes['truth']}")
        refused(conn, f"select count(*) from {probes['raw']}")
        refused(conn, "select count(*) from ops.load_audit")
        refused(conn, f"select count(*) from {probes['marts']}")
        refused(conn, "create schema raw_plant_was_here")  # only truth is its own
    for role in (roles.PLANT_ERP, roles.PLANT_EAM):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(login(role, "warehouse")).close()


@pytest.fixture
def scratch_erp(pg):
    """A stand-in ERP made by the plant's role: a table and an inbound function like the
    simulated ERP's, then the same privileges `make run` applies after the plant loads."""
    name = f"privtest_erp_{uuid.uuid4().hex[:6]}"
    pg.create_database(name)
    with psycopg.connect(pg.cluster.dsn(name), autocommit=True) as conn:
        conn.execute(f"alter database {name} owner to {roles.PLANT_ERP}")
        conn.execute(f"grant connect on database {name} to {roles.LOADER}, {roles.PUBLISHER}")
    with connected(roles.PLANT_ERP, name) as conn:
        conn.execute("create schema erp")
        conn.execute("create table erp.inbound_postings (key text, payload jsonb)")
        conn.execute("create function erp.post_message(p_key text, p_type text, p_payload jsonb) "
                     "returns text language plpgsql as $$ begin "
                     "insert into erp.inbound_postings values (p_key, p_payload); "
                     "return 'accepted'; end $$")
    roles.apply_plant_privileges(pg.cluster.dsn(name), "erp")
    yield name
    pg.cluster.drop_database(name)


def test_in_the_erp_the_publisher_only_posts_and_the_loader_only_reads(scratch_erp):
    with connected(roles.PUBLISHER, scratch_erp) as conn:
        assert conn.execute("select erp.post_message('k1', 't', '{}')").fetchone() == (
            "accepted",)
        refused(conn, "select * from erp.inbound_postings")
        refused(conn, "insert into erp.inbound_postings values ('k2', '{}')")
    with connected(roles.LOADER, scratch_erp) as conn:
        assert conn.execute("select key from erp.inbound_postings").fetchall() == [("k1",)]
        refused(conn, "select erp.post_message('k3', 't', '{}')")
        refused(conn, "delete from erp.inbound_postings")


# --------------------------------------------------------------------------- gated reading

DBT = PROJECT_ROOT / ".venv" / "bin" / "dbt"


@pytest.fixture(scope="module")
def reporting_scratch(pg):
    """A warehouse of its own with the reporting views built by dbt as the transformer, over
    hand-made marts and a gate history with one blocked scope (ERF on 2026-10-21, as in
    tests/report), twice (dbt drops and re-creates the views)."""
    from factory_platform.warehouse import ensure_warehouse
    from report.test_report import CHECK_RESULTS, MARTS_DDL, _mart_rows

    name = "privtest_reporting"  # one name: dbt's partial parse (same profile) then holds
    dsn = pg.create_database(name)
    ensure_warehouse(dsn)  # as the superuser: applies the role matrix
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"grant connect, temporary on database {name} to {roles.TRANSFORMER}")
        conn.execute(f"grant connect on database {name} to {roles.READER}")
    with psycopg.connect(dsn) as conn:
        for statement in MARTS_DDL.split(";"):
            conn.execute(statement)
        _mart_rows(conn)
        with conn.cursor() as cur:
            cur.executemany(
                "insert into dq.check_result (run_id, checked_at, check_name, check_kind, "
                "source_system, target, severity, site_code, production_day, failing_count) "
                "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", CHECK_RESULTS)
    target = INSTANCE.var_dir / "dbt-privtest"  # kept: dbt's partial parse makes re-runs fast
    env = dict(os.environ, PGDATABASE=name, PGUSER=roles.TRANSFORMER,
               PGPASSWORD=SECRET[roles.PASSWORD_ENV[roles.TRANSFORMER]],
               DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    # the reporting views and the gate's decision they read (dq.scope_status), then one view
    # again (dbt re-creates it)
    for select in ("path:models/reporting scope_status", "rpt_oee_line_day"):
        done = subprocess.run(
            [str(DBT), "run", "--select", select, "--threads", "4",
             "--project-dir", str(PROJECT_ROOT / "dbt_project"),
             "--profiles-dir", str(PROJECT_ROOT / "dbt_project"),
             "--target-path", str(target), "--log-path", str(target)],
            env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout[-4000:]
    yield name
    pg.cluster.drop_database(name)


def test_a_blocked_scope_is_invisible_to_the_reader_everywhere(reporting_scratch, pg):
    from datetime import date

    from factory_platform.report.render import PLATFORM_VIEWS

    blocked = ("ERF", date(2026, 10, 21))
    with connected(roles.REPORTER, reporting_scratch) as conn:
        readable = [r for (r,) in conn.execute(
            "select c.oid::regclass::text from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where c.relkind in ('r', 'p', 'v', 'm', 'f') "
            "and n.nspname not in ('pg_catalog', 'information_schema') "
            "and has_table_privilege(c.oid, 'select') order by 1")]
        assert readable and all(r.startswith("reporting.rpt_") for r in readable), readable
        for relation in readable:
            columns = [c for (c,) in conn.execute(
                "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0",
                (relation,))]
            days = [c for c in columns if c in ("production_date", "production_day",
                                                "balance_date", "first_production_date",
                                                "last_production_date")]
            if "site_code" in columns and days:
                rows = conn.execute(f"select site_code, {', '.join(days)} from {relation}"
                                    ).fetchall()
                assert rows, relation
                assert not [r for r in rows if r[0] == blocked[0] and blocked[1] in r[1:]], \
                    relation
        for relation in ("marts.mart_oee_line_day", "dq.scope_status", "dq.check_result"):
            refused(conn, f"select * from {relation}")
    with psycopg.connect(pg.cluster.dsn(reporting_scratch)) as conn:
        # every view the reader can read is gated by dq.scope_status, but the platform's own
        gated = {v for (v,) in conn.execute(
            "select distinct v.oid::regclass::text from pg_depend d "
            "join pg_rewrite w on w.oid = d.objid join pg_class v on v.oid = w.ev_class "
            "where d.refobjid = 'dq.scope_status'::regclass")}
    ungated = set(readable) - gated
    assert ungated == {f"reporting.{v}" for v in PLATFORM_VIEWS}


def test_days_a_transform_rebuilt_stay_hidden_until_its_gate_passes(reporting_scratch, pg):
    """A transform run rewrites the marts before its gate decides: from its start until its
    gate passes (for ever, if the gate crashes), the days of its interval are not shown — not
    even those an earlier gate passed. A run over everything hides every day."""
    from datetime import date

    def shown() -> set[tuple[str, date]]:
        with connected(roles.REPORTER, reporting_scratch) as conn:
            return set(conn.execute(
                "select distinct site_code, production_date from reporting.rpt_production_line_day"
            ).fetchall())

    def transform_run(run_id: str, started: str, interval: tuple[str, str] | None,
                      succeeded: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "insert into ops.transform_run (run_id, audit_upto, interval_start, "
                "interval_end, batches, started_at, succeeded_at) values "
                "(%s, %s, %s, %s, %s, %s, case when %s then %s::timestamptz end)",
                (run_id, started, *(interval or (None, None)), 3 if interval else 0, started,
                 succeeded, started))

    admin = pg.cluster.dsn(reporting_scratch)
    everything = {("ERF", date(2026, 10, 19)), ("ERF", date(2026, 10, 20)),
                  ("SZX", date(2026, 10, 21))}
    try:
        assert shown() == everything  # no transform run recorded: the gate history decides
        transform_run("gated", "2026-10-25 06:00+00", ("2026-10-19", "2026-10-22"), True)
        transform_run("crashed", "2026-10-25 07:00+00",
                      ("2026-10-17 00:00+00", "2026-10-18 06:00+00"), False)
        # the crashed run's days (its UTC dates ± 1: 10-16 … 10-19) are hidden, the rest stays
        assert shown() == everything - {("ERF", date(2026, 10, 19))}
        transform_run("empty", "2026-10-25 08:00+00", ("2026-10-25 08:00+00",) * 2, False)
        assert shown() == everything - {("ERF", date(2026, 10, 19))}  # it rebuilt nothing
        transform_run("passed", "2026-10-25 09:00+00", ("2026-10-17", "2026-10-25"), True)
        assert shown() == everything  # the next run took the batches again and passed
        transform_run("manual", "2026-10-25 10:00+00", None, False)  # under way, everything
        assert shown() == set()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("delete from ops.transform_run")


# --------------------------------------------------------------------------- secrets


def secret_values() -> dict[str, str]:
    """Every secret of this instance (long enough to be told apart from other text)."""
    return {k: v for k, v in load_or_create_secrets(INSTANCE).items() if len(v) >= 8}


def leaks(text: str, where: str) -> list[str]:
    return [f"{key} in {where}" for key, value in secret_values().items() if value in text]


def test_secret_files_are_readable_by_their_owner_only(tmp_path):
    from dataclasses import replace

    from launcher.__main__ import write_admin_password
    from launcher.settings import (
        admin_passfile,
        plant_passfile,
        platform_environment,
        write_env_file,
    )

    instance = replace(INSTANCE, name=f"privtest-{uuid.uuid4().hex[:6]}")
    try:
        secret = load_or_create_secrets(instance)
        write_admin_password(instance, secret)
        env_file = tmp_path / ".env"
        write_env_file(env_file, platform_environment(instance, secret))
        files = [instance.secrets_file, instance.airflow_home / "passwords.json", env_file,
                 admin_passfile(instance, secret), plant_passfile(instance, secret),
                 INSTANCE.secrets_file, Path(os.environ["PGPASSFILE"])]
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        import shutil

        shutil.rmtree(instance.var_dir, ignore_errors=True)


def test_fixture_reprs_hold_no_secret(pg):
    """A failing test prints its fixtures' values: the cluster's shows no password."""
    assert leaks(repr(pg) + repr(pg.cluster) + pg.dsn, "a fixture's repr") == []


def test_make_run_starts_nothing_with_a_secret_on_its_command_line():
    from launcher.__main__ import (
        AIRFLOW_COMPONENTS,
        edge_collector_command,
        plant_command,
    )
    from launcher.settings import platform_environment

    cmd, env = plant_command(INSTANCE, SECRET)
    assert leaks(" ".join(cmd), "the plant's command line") == []
    assert env == {"PLANT_API_KEY": SECRET["MES_API_KEY"],
                   "PLANT_MQTT_PASSWORD": SECRET["MQTT_PASSWORD"]}
    cmd, env = edge_collector_command(INSTANCE, SECRET)
    assert leaks(" ".join(cmd), "the edge collector's command line") == []
    assert env == {"EDGE_MQTT_PASSWORD": SECRET["MQTT_EDGE_PASSWORD"]}
    for args in AIRFLOW_COMPONENTS.values():
        assert leaks(" ".join(args), "an Airflow command line") == []
    assert "--skip-serve-logs" in AIRFLOW_COMPONENTS["scheduler"]
    assert "--skip-serve-logs" in AIRFLOW_COMPONENTS["triggerer"]
    env = platform_environment(INSTANCE, SECRET)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"  # the embedded default: loopback only
    # no component connects as the superuser
    assert SECRET["PGPASSWORD"] not in json.dumps(env)
    assert not re.search(r"://postgres[:@]", json.dumps(env)) and env["PGUSER"] == roles.TRANSFORMER


def test_no_process_has_a_secret_on_its_command_line():
    """While the suite runs (the plant, dbt, the cluster, Airflow's tasks in this process):
    every command line of the machine, against this instance's secrets."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
            except OSError:
                continue
            found += leaks(args, f"pid {proc.name}")
    assert found == []


def test_no_log_alert_or_quarantine_row_holds_a_secret(warehouse_dsn):
    """The instance's logs (task logs, service logs, the cluster's server log) and the rows a
    load or an incident writes, after whatever the suite ran so far."""
    var = INSTANCE.var_dir
    paths = [var / "pg" / "server.log"]
    for folder in (var / "airflow" / "logs", var / "logs", var / "reports", var / "outbound"):
        paths += folder.rglob("*")
    paths += (var / "plant" / "inbox").glob("*/quarantine/*.reason.txt")
    found = []
    for path in paths:
        if path.is_file():
            found += leaks(path.read_text(errors="ignore"), str(path))
    with psycopg.connect(warehouse_dsn) as conn:
        for table, columns in (("ops.quarantine", "record_ref, reason, raw_payload"),
                               ("ops.source_incident", "subject, reason"),
                               ("ops.erp_outbox", "erp_reason, payload::text")):
            for row in conn.execute(f"select concat_ws(' ', {columns}) from {table}"):
                found += leaks(row[0] or "", table)
    assert found == []


def test_an_alert_never_carries_a_secret_the_masker_knows(monkeypatch):
    """A task's failure alert quoting a connection's password (an error message with a DSN):
    the webhook gets *** instead (the connection was fetched, so the masker knows it)."""
    from factory_platform.alerts import send_alert
    from factory_platform.warehouse import warehouse_dsn

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SFDP_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/")
        dsn = warehouse_dsn("warehouse_load")  # registers the loader's password
        password = SECRET[roles.PASSWORD_ENV[roles.LOADER]]
        assert password in dsn
        assert send_alert("load failed", f"could not connect: {dsn}", dsn=dsn)
    finally:
        server.shutdown()
    assert received and password not in received[0] and "***" in received[0]


def test_each_broker_account_may_do_only_its_job():
    """make run's broker (launcher.broker_for): the plant publishes its machine events, the
    edge collector its PLC readings, the platform's ingest only reads. Over MQTT 5 the broker
    answers a publish it refuses with 'not authorized' (PUBACK reason 135) and delivers
    nothing of it; a wrong password is refused at connect."""
    import paho.mqtt.client as mqtt
    from launcher.__main__ import EDGE_MQTT_USER, PLANT_MQTT_USER, broker_for
    from launcher.settings import INGEST_MQTT_USER

    # under var/ (as root the broker runs as the mosquitto user, who cannot enter pytest's tmp)
    root = INSTANCE.var_dir / "mosquitto-acl-test"
    broker = broker_for(INSTANCE, SECRET, root=root)
    broker.stop()  # one an interrupted run left
    shutil.rmtree(root, ignore_errors=True)
    passwords = {PLANT_MQTT_USER: SECRET["MQTT_PASSWORD"],
                 EDGE_MQTT_USER: SECRET["MQTT_EDGE_PASSWORD"],
                 INGEST_MQTT_USER: SECRET["MQTT_INGEST_PASSWORD"]}
    machine = "ENT/ERF/ERF-MACH/ERF-L1/ERF-L1-M01"

    def client(user: str, password: str) -> tuple[mqtt.Client, dict]:
        seen: dict = {"connect": threading.Event(), "rc": None, "acks": {}, "got": [],
                      "subscribed": threading.Event()}
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-{user}-{uuid.uuid4()}",
                        protocol=mqtt.MQTTv5)
        c.username_pw_set(user, password)
        c.on_connect = lambda _c, _u, _f, rc, _p: (seen.update(rc=rc), seen["connect"].set())
        c.on_publish = lambda _c, _u, mid, rc, _p: seen["acks"].__setitem__(mid, rc.value)
        c.on_message = lambda _c, _u, msg: seen["got"].append(msg.topic)
        c.on_subscribe = lambda *_: seen["subscribed"].set()
        c.connect("127.0.0.1", INSTANCE.mqtt_port)
        c.loop_start()
        assert seen["connect"].wait(10), user
        return c, seen

    def publish(c, seen, topic: str) -> int:
        mid = c.publish(topic, b"{}", qos=1).mid
        for _ in range(100):
            if mid in seen["acks"]:
                return seen["acks"][mid]
            threading.Event().wait(0.05)
        raise AssertionError(f"no PUBACK for {topic}")

    broker.start()
    clients = []
    try:
        wrong, seen = client(INGEST_MQTT_USER, "not-the-password")
        clients.append(wrong)
        assert seen["rc"].is_failure  # refused at connect
        ingest, inbox = client(INGEST_MQTT_USER, passwords[INGEST_MQTT_USER])
        plant, plant_seen = client(PLANT_MQTT_USER, passwords[PLANT_MQTT_USER])
        edge, edge_seen = client(EDGE_MQTT_USER, passwords[EDGE_MQTT_USER])
        clients += [ingest, plant, edge]
        ingest.subscribe("ENT/#", qos=1)
        assert inbox["subscribed"].wait(10)
        assert publish(plant, plant_seen, f"{machine}/counter") == 0
        assert publish(edge, edge_seen, f"{machine}/plc") == 0
        refused = 135  # MQTT 5 reason code: not authorized
        assert publish(plant, plant_seen, f"{machine}/plc") == refused  # not the plant's topic
        assert publish(edge, edge_seen, f"{machine}/state") == refused  # not the edge's
        assert publish(ingest, inbox, f"{machine}/counter") == refused  # the ingest only reads
        threading.Event().wait(1)
        assert sorted(inbox["got"]) == [f"{machine}/counter", f"{machine}/plc"]
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
