"""The warehouse's schemas and operational tables, and how code reaches the warehouse.

`ensure_warehouse` is idempotent: the launcher calls it at start-up, and every load calls it
once per process, so a new deployment needs no separate migration step.
"""

from __future__ import annotations

import os
from functools import lru_cache

from factory_platform.extract.incidents import DDL as SOURCE_INCIDENT_DDL

SCHEMAS = (
    "raw_erp", "raw_mes", "raw_wms", "raw_scada", "raw_qms", "raw_plm", "raw_eam", "raw_ems",
    "ops", "staging", "conformed", "marts", "publish", "dq", "reporting",
)

OPS_DDL = """
create table if not exists ops.load_audit (
    batch_id            text primary key,
    system              text not null,
    entity              text not null,
    interval_start      timestamptz not null,
    interval_end        timestamptz not null,
    window_start        timestamptz not null,
    source              text not null,
    rows_read           bigint not null,
    rows_loaded         bigint not null,
    rows_quarantined    bigint not null,
    duplicates_skipped  bigint not null,
    rows_replaced       bigint not null,
    run_id              text,
    started_at          timestamptz not null,
    finished_at         timestamptz not null default now()
);
comment on table ops.load_audit is
    'One row per extraction batch: what was read, loaded, quarantined and skipped as duplicate.';
create index if not exists load_audit_system_entity on ops.load_audit (system, entity, interval_start);
alter table ops.load_audit add column if not exists status text not null default 'loaded';
alter table ops.load_audit alter column finished_at set default clock_timestamp();
comment on column ops.load_audit.status is
    'loaded, rejected (too many bad records: nothing loaded, the bad ones quarantined) or '
    'refused (an empty answer where raw holds rows: nothing replaced)';

create table if not exists ops.extract_watermark (
    system       text not null,
    entity       text not null,
    loaded_upto  timestamptz not null,
    batch_id     text not null,
    updated_at   timestamptz not null default clock_timestamp(),
    primary key (system, entity)
);
comment on table ops.extract_watermark is
    'High-water mark per entity: everything before loaded_upto was loaded and committed. '
    'A scheduled run first loads the time since it (an outage, failed batches), in slices.';

create table if not exists ops.quarantine (
    quarantine_id   bigserial primary key,
    batch_id        text not null,
    system          text not null,
    entity          text not null,
    source          text not null,
    record_ref      text not null,
    reason          text not null,
    raw_payload     text,
    quarantined_at  timestamptz not null default now()
);
comment on table ops.quarantine is
    'Records that failed parsing, a required field or a type: kept with source, position and reason.';
create index if not exists quarantine_batch on ops.quarantine (batch_id);
create index if not exists quarantine_system_entity on ops.quarantine (system, entity);

create table if not exists ops.schema_drift (
    system          text not null,
    entity          text not null,
    column_name     text not null,
    first_batch_id  text not null,
    first_seen_at   timestamptz not null default now(),
    primary key (system, entity, column_name)
);
comment on table ops.schema_drift is
    'Columns a source started sending that the registry does not declare (kept in _extra).';

create table if not exists ops.erp_outbox (
    outbox_id            bigserial primary key,
    idempotency_key      text not null unique,
    message_type         text not null,
    business_key         text not null,
    version              integer not null,
    kind                 text not null check (kind in ('posting', 'reversal')),
    content_hash         text not null,
    payload              jsonb not null,
    site_code            text,
    production_date      date,
    order_number         text,
    state                text not null default 'pending'
                         check (state in ('pending', 'accepted', 'rejected')),
    erp_answer           text check (erp_answer in ('accepted', 'duplicate', 'rejected')),
    erp_reason           text,
    erp_document_number  text,
    reverses_key         text,
    dq_flagged           boolean not null default false,
    run_id               text,
    created_at           timestamptz not null default now(),
    answered_at          timestamptz
);
comment on table ops.erp_outbox is
    'Every message meant for the ERP: written pending (with its idempotency key) and committed '
    'before sending, then the ERP answer. A pending row after a crash is resent with the same key.';
alter table ops.erp_outbox add column if not exists answered_in_run text;
comment on column ops.erp_outbox.answered_in_run is
    'The publish run that received the ERP answer (a resent row: the retrying run).';
create index if not exists erp_outbox_answered_in_run on ops.erp_outbox (answered_in_run);
create index if not exists erp_outbox_business_key on ops.erp_outbox (message_type, business_key, version);
create index if not exists erp_outbox_pending on ops.erp_outbox (outbox_id) where state = 'pending';

create table if not exists ops.transform_run (
    run_id          text primary key,
    audit_upto      timestamptz not null,
    interval_start  timestamptz,
    interval_end    timestamptz,
    batches         bigint not null,
    started_at      timestamptz not null default now(),
    succeeded_at    timestamptz
);
comment on table ops.transform_run is
    'What each transform_dbt run processed: the load batches finished up to audit_upto since '
    'the last run that succeeded, as one interval (null: everything). See transform_window.py.';

create table if not exists dq.check_result (
    result_id       bigserial primary key,
    run_id          text not null,
    checked_at      timestamptz not null default now(),
    check_name      text not null,
    check_kind      text not null check (check_kind in ('dbt', 'gx')),
    source_system   text not null,
    target          text not null,
    severity        text not null check (severity in ('error', 'warn')),
    site_code       text not null,
    production_day  date not null,
    failing_count   bigint not null check (failing_count >= 0),
    sample_keys     jsonb not null default '[]'
);
comment on table dq.check_result is
    'Quality-gate history: one row per check, scope (site x production day) and run. A check '
    'writes a row for every scope it evaluated, failing_count 0 when the scope passed.';
create index if not exists check_result_scope on dq.check_result (site_code, production_day, checked_at);
create index if not exists check_result_check on dq.check_result (check_name, checked_at);

create or replace view dq.scope_status as
with latest as (
    select distinct on (check_name, site_code, production_day) *
    from dq.check_result
    order by check_name, site_code, production_day, checked_at desc, result_id desc
)
select site_code, production_day,
       case when bool_or(severity = 'error' and failing_count > 0) then 'blocked'
            when bool_or(severity = 'warn' and failing_count > 0) then 'flagged'
            else 'passed' end as decision,
       coalesce(array_agg(check_name order by check_name)
                filter (where failing_count > 0), '{}') as failing_checks,
       max(checked_at) as decided_at
from latest
group by site_code, production_day;
comment on view dq.scope_status is
    'The gate per scope (site x production day), from the latest result of every check: '
    'blocked (an error-severity check fails: not published), flagged (only warnings: published '
    'with a flag) or passed.'
"""
OPS_DDL += ";\n" + SOURCE_INCIDENT_DDL


def _is_current(conn) -> bool:
    """True when every schema and the newest ops column exist: then there is nothing to do,
    and no DDL (whose locks could deadlock against running loads) is issued."""
    row = conn.execute(
        "select count(*) = %s, "
        "exists (select 1 from information_schema.columns where table_schema = 'ops' "
        "        and table_name = 'load_audit' and column_name = 'status') "
        "       and to_regclass('ops.quarantine') is not null "
        "       and to_regclass('ops.schema_drift') is not null "
        "       and to_regclass('dq.scope_status') is not null "
        "       and to_regclass('ops.erp_outbox_answered_in_run') is not null "
        "       and to_regclass('ops.transform_run') is not null "
        "       and to_regclass('ops.extract_watermark') is not null "
        "       and to_regclass('ops.source_incident_open') is not null "
        "from pg_namespace where nspname = any(%s)",
        (len(SCHEMAS), list(SCHEMAS)),
    ).fetchone()
    return bool(row[0] and row[1])


def ensure_warehouse(dsn: str) -> None:
    """Create the layer schemas and the ops tables if they do not exist.

    Each statement runs on its own (autocommit) under a session advisory lock, and nothing runs
    at all when the warehouse is current, so concurrent loads never wait on this DDL."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        if _is_current(conn):
            return
        conn.execute("select pg_advisory_lock(20261122)")
        try:
            for schema in SCHEMAS:
                conn.execute(f"create schema if not exists {schema}")
            for statement in OPS_DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
        finally:
            conn.execute("select pg_advisory_unlock(20261122)")


def warehouse_dsn(conn_id: str = "warehouse") -> str:
    """libpq DSN of an Airflow connection (resolved from AIRFLOW_CONN_* or the metadata DB)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    return connection_dsn(conn.host, conn.port, conn.login, conn.password, conn.schema)


def connection_dsn(host, port, user, password, dbname) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(host=host, port=port or 5432, user=user, password=password,
                         dbname=dbname)


@lru_cache(maxsize=8)
def _ensured(dsn: str) -> bool:
    ensure_warehouse(dsn)
    return True


def ensure_warehouse_once(dsn: str) -> None:
    """`ensure_warehouse` at most once per process and DSN."""
    _ensured(dsn)


def env_dsn() -> str:
    """DSN from the standard libpq variables (PGHOST, PGPORT, …), as `.env` sets them."""
    return connection_dsn(os.environ.get("PGHOST", "127.0.0.1"), os.environ.get("PGPORT"),
                          os.environ.get("PGUSER"), os.environ.get("PGPASSWORD"),
                          os.environ.get("PGDATABASE", "warehouse"))
