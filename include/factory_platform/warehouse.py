"""The warehouse's schemas and operational tables, and how code reaches the warehouse.

`ensure_warehouse` is idempotent: the launcher calls it at start-up, and every load calls it
once per process, so a new deployment needs no separate migration step.
"""

from __future__ import annotations

import os
from functools import lru_cache

# The platform's own layers; the raw schemas come from the source registry (`schemas()`).
LAYER_SCHEMAS = ("ops", "staging", "conformed", "marts", "publish", "dq", "reporting")


def schemas() -> tuple[str, ...]:
    """Every schema the warehouse needs: `raw_<system>` of each registered system, then the
    layers."""
    from factory_platform.sources import raw_schemas

    return (*raw_schemas(), *LAYER_SCHEMAS)

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
alter table ops.transform_run add column if not exists batch_ids jsonb;
comment on column ops.transform_run.batch_ids is
    'The load batches (ops.load_audit ids, a JSON array) the run took: once it succeeded, no '
    'later run takes them again, even within the overlap that catches late commits.';

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
create index if not exists check_result_check on dq.check_result (check_name, checked_at)
"""
# The gate's decision per scope, the view dq.scope_status, is a dbt model over dq.check_result
# (dbt_project/models/quality/scope_status.sql): a warehouse has it once dbt built.
# The faults of whole deliveries and answers, kept open until resolved (extract/incidents.py
# writes them).
OPS_DDL += ";\n" + """
create table if not exists ops.source_incident (
    incident_id     bigserial primary key,
    system          text not null,
    entity          text not null,
    kind            text not null,
    subject         text not null,
    reason          text not null,
    batch_id        text,
    first_seen_at   timestamptz not null default clock_timestamp(),
    last_seen_at    timestamptz not null default clock_timestamp(),
    times_seen      integer not null default 1,
    resolved_at     timestamptz,
    alerted_at      timestamptz
);
comment on table ops.source_incident is
    'Faults of a whole delivery or answer (file set aside, waiting, late or unmatched, answer '
    'refused, batch failed): one row while open, counted per sighting, alerted once.';
create unique index if not exists source_incident_open
    on ops.source_incident (system, entity, kind, subject) where resolved_at is null;
create index if not exists source_incident_system on ops.source_incident (system, resolved_at)
"""

# ERP exactly once when the ERP says no, and publishing only what the gate checked
# (erp_publish.py, quality/checked.py). No semicolons inside comments or strings here:
# ensure_warehouse splits on them.
ERP_PUBLISH_DDL = """
alter table ops.erp_outbox add column if not exists attempts integer not null default 0;
alter table ops.erp_outbox add column if not exists next_attempt_at timestamptz;
alter table ops.erp_outbox add column if not exists erp_reason_code text;
alter table ops.erp_outbox add column if not exists rejection_class text;
alter table ops.erp_outbox add column if not exists requires_key text;
alter table ops.erp_outbox add column if not exists plan_reason text;
alter table ops.erp_outbox add column if not exists gate_run_id text;
alter table ops.erp_outbox add column if not exists document_fields jsonb;
alter table ops.erp_outbox add column if not exists b2mml_due boolean not null default false;
alter table ops.erp_outbox alter column b2mml_due set default true;
alter table ops.erp_outbox add column if not exists b2mml_run_id text;
alter table ops.erp_outbox add column if not exists b2mml_file text;
alter table ops.erp_outbox add column if not exists b2mml_written_at timestamptz;
alter table ops.erp_outbox drop constraint if exists erp_outbox_state_check;
alter table ops.erp_outbox add constraint erp_outbox_state_check
    check (state in ('pending', 'accepted', 'rejected', 'cancelled'));
alter table ops.erp_outbox drop constraint if exists erp_outbox_rejection_class_check;
alter table ops.erp_outbox add constraint erp_outbox_rejection_class_check
    check (rejection_class in ('transient', 'permanent'));
comment on column ops.erp_outbox.state is
    'pending (not answered yet, or rejected transiently and waiting for next_attempt_at), '
    'accepted, rejected (permanently: the key is held, see ops.erp_hold) or cancelled (never '
    'sent: the reversal it waited for was rejected)';
comment on column ops.erp_outbox.attempts is 'Answers received for this row (a transient rejection counts).';
comment on column ops.erp_outbox.next_attempt_at is
    'After a transient rejection: the row is not sent again before this time (backoff).';
comment on column ops.erp_outbox.erp_reason_code is
    'The ERP''s machine-readable rejection class of the last answer (TRANSIENT_* or PERMANENT_*).';
comment on column ops.erp_outbox.rejection_class is 'transient or permanent, for rejected answers.';
comment on column ops.erp_outbox.requires_key is
    'A new version is sent only once this reversal (its idempotency key) is accepted.';
comment on column ops.erp_outbox.plan_reason is
    'Why the row was planned: new, changed, vanished (reversal of a key gone from the publish model).';
comment on column ops.erp_outbox.gate_run_id is
    'The quality-gate run whose checked content (dq.checked_publish) allowed this row.';
comment on column ops.erp_outbox.document_fields is
    'Fields of the publish row a B2MML document needs beyond the payload (confirmations).';
comment on column ops.erp_outbox.b2mml_due is
    'True for every row planned since B2MML coverage is tracked (older rows: documents of their day).';
comment on column ops.erp_outbox.b2mml_written_at is
    'When the B2MML document carrying this accepted posting was written (b2mml_file, by b2mml_run_id).';
create index if not exists erp_outbox_reverses_key on ops.erp_outbox (reverses_key)
    where reverses_key is not null;

create table if not exists ops.erp_hold (
    hold_id          bigserial primary key,
    message_type     text not null,
    business_key     text not null,
    kind             text not null check (kind in ('erp_rejected', 'scope_blocked', 'vanished_bulk')),
    reason           text not null,
    reason_code      text,
    outbox_id        bigint,
    site_code        text,
    production_date  date,
    order_number     text,
    held_in_run      text,
    held_at          timestamptz not null default now(),
    released_at      timestamptz,
    released_by      text,
    release_note     text
);
comment on table ops.erp_hold is
    'Business keys publish_erp posts nothing for while held (released_at null). erp_rejected: the '
    'ERP rejected a row for good - a human releases it (python -m factory_platform.erp_publish '
    'release), the next run then plans the key again from what the ERP holds. scope_blocked: the '
    'key was posted and its scope is blocked now - the posting stays, released automatically when '
    'the scope passes again. vanished_bulk: too many keys vanished from the publish model at once '
    '- released automatically when the key is back, or by a human (then it is reversed).';
create unique index if not exists erp_hold_open on ops.erp_hold (message_type, business_key)
    where released_at is null;

create table if not exists dq.gate_step (
    run_id        text not null,
    step          text not null,
    completed_at  timestamptz not null default now(),
    detail        jsonb not null default '{}',
    primary key (run_id, step)
);
comment on table dq.gate_step is
    'One row per quality-gate check step (dbt_gate, gx_gate) that completed for a run (its results '
    'recorded, failing or not). A step that crashed has no row, and the run cannot pass the gate.';

create table if not exists dq.gate_run (
    run_id     text primary key,
    steps      text[] not null,
    passed_at  timestamptz not null default now()
);
comment on table dq.gate_run is
    'Runs whose every gate check step completed (quality_gate). publish_erp posts what the latest '
    'of them checked (dq.checked_publish).';

create table if not exists dq.checked_publish (
    run_id          text not null,
    message_type    text not null,
    site_code       text not null,
    production_day  date not null,
    row_count       bigint not null,
    content_hash    text not null,
    checked_at      timestamptz not null default now(),
    primary key (run_id, message_type, site_code, production_day)
);
comment on table dq.checked_publish is
    'What the gate checked: per run, ERP message type and scope, the publish rows the dbt gate '
    'tests saw (count and md5 over business_key=content_hash in key order). publish_erp posts a '
    'scope only while its rows still hash to what the latest passed gate run checked.'
"""
OPS_DDL += ";\n" + ERP_PUBLISH_DDL

# Noticing silence (source_watch.py, the watch_sources DAG): dbt source freshness per raw table,
# and the not-seen incidents per system. In dq, so the transformer owns them (roles.py).
SOURCE_WATCH_DDL = """
create table if not exists dq.source_freshness (
    freshness_id         bigserial primary key,
    run_id               text not null,
    checked_at           timestamptz not null default clock_timestamp(),
    source_name          text not null,
    table_name           text not null,
    status               text not null check (status in ('pass', 'warn', 'error', 'runtime error')),
    max_loaded_at        timestamptz,
    snapshotted_at       timestamptz,
    age_seconds          double precision,
    warn_after_seconds   double precision,
    error_after_seconds  double precision,
    error                text
);
comment on table dq.source_freshness is
    'dbt source freshness history: one row per raw table and watch run - status (pass, warn, '
    'error, runtime error), newest _extracted_at (null: no row), age and the yml thresholds.';
create index if not exists source_freshness_table
    on dq.source_freshness (source_name, table_name, checked_at);

create table if not exists dq.source_not_seen (
    incident_id        bigserial primary key,
    system             text not null,
    silent_entities    jsonb not null,
    threshold_seconds  double precision not null,
    last_loaded_at     timestamptz,
    opened_at          timestamptz not null,
    opened_in_run      text,
    open_alerted_at    timestamptz,
    cleared_at         timestamptz,
    cleared_in_run     text,
    clear_alerted_at   timestamptz
);
comment on table dq.source_not_seen is
    'Not-seen incidents: a system whose entities loaded no batch for longer than 2 x its '
    'schedule + a grace (silent_entities: entity to its last batch). One open row per system, '
    'alerted once when it opens and once when it clears (a newer batch of every silent entity).';
create unique index if not exists source_not_seen_open on dq.source_not_seen (system)
    where cleared_at is null
"""
OPS_DDL += ";\n" + SOURCE_WATCH_DDL


def _missing_schemas(conn) -> list[str]:
    """The warehouse's schemas that do not exist (a raw schema an operator dropped to reload a
    system, or every one on a fresh database)."""
    wanted = list(schemas())
    present = {name for (name,) in conn.execute(
        "select nspname from pg_namespace where nspname = any(%s)", (wanted,)).fetchall()}
    return [name for name in wanted if name not in present]


def _ops_is_current(conn) -> bool:
    """True when the ops and dq tables exist with their newest column: then no ops DDL (whose
    locks could deadlock against running loads, and which a job's role may not run) is issued."""
    row = conn.execute(
        # pg_attribute, not information_schema: a role that may not read load_audit (the
        # publisher) must see the same answer as one that may
        "select exists (select 1 from pg_attribute "
        "        where attrelid = to_regclass('ops.load_audit') "
        "        and attname = 'status' and not attisdropped) "
        "       and to_regclass('ops.quarantine') is not null "
        "       and to_regclass('ops.schema_drift') is not null "
        "       and to_regclass('ops.erp_outbox_answered_in_run') is not null "
        "       and to_regclass('ops.transform_run') is not null "
        "       and to_regclass('ops.extract_watermark') is not null "
        "       and to_regclass('ops.source_incident_open') is not null "
        "       and to_regclass('ops.erp_outbox_reverses_key') is not null "
        "       and to_regclass('ops.erp_hold_open') is not null "
        "       and to_regclass('dq.gate_step') is not null "
        "       and to_regclass('dq.gate_run') is not null "
        "       and to_regclass('dq.checked_publish') is not null "
        "       and to_regclass('dq.source_not_seen_open') is not null",
    ).fetchone()
    return bool(row[0])


def _is_current(conn) -> bool:
    """True when every schema and the newest ops column exist: then there is nothing to do."""
    return not _missing_schemas(conn) and _ops_is_current(conn)


def ensure_warehouse(dsn: str) -> None:
    """Create the layer schemas and the ops tables if they do not exist.

    Each statement runs on its own (autocommit) under a session advisory lock, and nothing runs
    at all when the warehouse is current, so concurrent loads never wait on this DDL. Only what
    is missing is created: a load after an operator dropped its raw schema recreates that
    schema (the loader may create schemas) and leaves the ops tables alone (it may not create
    tables in ops: `create table if not exists` checks that privilege before it looks)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        if _is_current(conn):
            return
        conn.execute("select pg_advisory_lock(20261122)")
        try:
            for schema in _missing_schemas(conn):
                conn.execute(f"create schema if not exists {schema}")
            if not _ops_is_current(conn):
                for statement in OPS_DDL.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            _apply_role_matrix(conn)
        finally:
            conn.execute("select pg_advisory_unlock(20261122)")


def _apply_role_matrix(conn) -> None:
    """A superuser preparing the warehouse also hands what it created to the jobs' roles and
    grants their privileges (factory_platform.roles), once those roles exist."""
    from factory_platform import roles

    if roles.is_superuser(conn) and roles.roles_exist(conn):
        roles.apply_warehouse_privileges(conn)


# The connection each job's tasks use when they ask for "warehouse" or "erp_db": the role of
# the job (factory_platform/roles.py), chosen here by the running task's DAG and task id, so a
# task cannot end up with a role that may do more than its job. First match wins; a task of no
# listed job (and any code outside a task) gets the connection it asked for. The connections
# themselves: launcher/settings.py (make run, tests) and docker-compose.yml.
JOB_CONNECTIONS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("extract_*", "*", {"warehouse": "warehouse_load"}),  # loader
    ("publish_erp", "read_back_erp_answers", {"warehouse": "warehouse_load"}),  # loads raw_erp
    ("publish_erp", "reconcile_with_erp", {}),  # dbt builds the reconciliation: transformer
    ("publish_erp", "*", {"warehouse": "warehouse_publish", "erp_db": "erp_inbound"}),
    ("publish_reporting", "*", {"warehouse": "warehouse_report"}),  # reporting_reader
    ("watch_sources", "*", {}),  # source freshness (dbt) and not-seen: the transformer
    # transform_dbt (and Cosmos' profile): "warehouse", the transformer
)


def job_connection(conn_id: str, dag_id: str | None = None, task_id: str | None = None) -> str:
    """The connection id a task of `dag_id`/`task_id` (default: the running task) uses for
    `conn_id`."""
    from fnmatch import fnmatchcase

    if dag_id is None:
        try:
            from airflow.sdk import get_current_context

            ti = get_current_context()["ti"]
            dag_id, task_id = ti.dag_id, ti.task_id
        except Exception:  # noqa: BLE001 — not inside a task: the connection asked for
            return conn_id
    for dag_pattern, task_pattern, mapping in JOB_CONNECTIONS:
        if fnmatchcase(dag_id, dag_pattern) and fnmatchcase(task_id or "", task_pattern):
            return mapping.get(conn_id, conn_id)
    return conn_id


def warehouse_dsn(conn_id: str = "warehouse") -> str:
    """libpq DSN of an Airflow connection (resolved from AIRFLOW_CONN_* or the metadata DB);
    inside a task, "warehouse" and "erp_db" resolve to the connection of the task's job
    (`job_connection`). Its password is registered with Airflow's secrets masker."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(job_connection(conn_id))
    mask_secret(conn.password)
    mask_secret(os.environ.get("PGPASSWORD"))  # dbt's (profiles.yml), in every task's env
    return connection_dsn(conn.host, conn.port, conn.login, conn.password, conn.schema)


def mask_secret(value: str | None) -> None:
    """Let Airflow's secrets masker replace `value` wherever a task would log it (no-op
    outside Airflow)."""
    if not value:
        return
    try:
        from airflow.sdk.log import mask_secret as _mask
    except ImportError:  # pragma: no cover — Airflow not installed (plain scripts)
        return
    _mask(value)


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
