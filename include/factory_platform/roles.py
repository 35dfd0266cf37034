"""Database roles: one per job, and what each may do (the role matrix).

Nothing of the platform runs as the superuser. The superuser only creates the roles and the
databases and applies this matrix (factory_platform.provision) — `make run` (include/launcher),
the test session's set-up (tests/conftest.py) and the deployment's init container (`python -m
factory_platform.provision`), all with the same code:

| role | connects to | may |
| --- | --- | --- |
| sfdp_loader | warehouse, erp, eam | own `raw_*` (create a new `raw_<system>` schema, nothing else); write the extraction bookkeeping in `ops` (load_audit, quarantine, schema_drift, extract_watermark, source_incident); read `ops.erp_*`; read the plant's ERP and EAM tables |
| sfdp_transformer | warehouse | read `raw_*` and `ops`; own staging, conformed, marts, publish, reporting, dq, dq_failures, snapshots, quality (dbt drops and re-creates its relations); write `ops.transform_run` |
| sfdp_publisher | warehouse, erp | read publish and dq; write `ops.erp_*` (the outbox, holds); in the ERP only EXECUTE `erp.post_message` |
| reporting_reader (NOLOGIN; sfdp_reporter and BI logins are members) | warehouse | read the `reporting.rpt_*` views |
| sfdp_airflow | airflow | own Airflow's metadata database |
| plant_erp, plant_eam, plant_truth | erp, eam, warehouse | the simulated plant: own the erp / eam databases and the warehouse's `truth` schema |

No role is a superuser, none has CREATEDB, CREATEROLE, BYPASSRLS or a `pg_*_server_*` role
(so none runs `COPY … FROM PROGRAM` or reads server files). CONNECT to every database is
revoked from PUBLIC; each role gets it only where listed.

Relations belong to their schema's role, whoever creates them: an event trigger in the
warehouse hands what a superuser creates in a role's schema to that role (so a set-up or a test
working as the superuser never leaves a relation the job cannot drop and re-create), grants the
schema's readers SELECT on it, and refuses a schema a role may not create. Default privileges
give the readers SELECT on what dbt (or the loader) creates later. New `ops` tables follow the
prefix rules of `OPS_PREFIX_GRANTS` (`erp_*`, `publish_*`: the publisher's; `transform_*`,
`gate_*`: the transformer's; anything else: the loader's), read by the transformer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets as _secrets
from dataclasses import dataclass

LOADER = "sfdp_loader"
TRANSFORMER = "sfdp_transformer"
PUBLISHER = "sfdp_publisher"
READER = "reporting_reader"  # NOLOGIN group: BI logins and the report's login are members
REPORTER = "sfdp_reporter"  # the HTML report's login (publish_reporting)
AIRFLOW = "sfdp_airflow"
PLANT_ERP, PLANT_EAM, PLANT_TRUTH = "plant_erp", "plant_eam", "plant_truth"

TASK_ROLES = (LOADER, TRANSFORMER, PUBLISHER, REPORTER)
PLATFORM_LOGINS = (*TASK_ROLES, AIRFLOW)
PLANT_LOGINS = (PLANT_ERP, PLANT_EAM, PLANT_TRUTH)
ALL_ROLES = (*PLATFORM_LOGINS, READER, *PLANT_LOGINS)

# Where each login's password comes from: the deployment's environment, the launcher's
# secrets.env (same names).
PASSWORD_ENV = {
    LOADER: "SFDP_LOADER_PASSWORD",
    TRANSFORMER: "SFDP_TRANSFORMER_PASSWORD",
    PUBLISHER: "SFDP_PUBLISHER_PASSWORD",
    REPORTER: "SFDP_REPORTER_PASSWORD",
    AIRFLOW: "SFDP_AIRFLOW_DB_PASSWORD",
    PLANT_ERP: "PLANT_ERP_DB_PASSWORD",
    PLANT_EAM: "PLANT_EAM_DB_PASSWORD",
    PLANT_TRUTH: "PLANT_TRUTH_DB_PASSWORD",
}

WAREHOUSE_DB, AIRFLOW_DB, ERP_DB, EAM_DB = "warehouse", "airflow", "erp", "eam"

# database: (owner or None for the superuser, {role: privileges})
PLATFORM_DATABASES = {
    WAREHOUSE_DB: (None, {LOADER: "CONNECT, TEMPORARY, CREATE",  # CREATE: raw_<system> only
                          # CREATE: dev_* schemas only (dbt's dev target, SCHEMA_CREATORS)
                          TRANSFORMER: "CONNECT, TEMPORARY, CREATE",
                          PUBLISHER: "CONNECT, TEMPORARY",
                          READER: "CONNECT"}),
    AIRFLOW_DB: (AIRFLOW, {}),
}
PLANT_DATABASES = {
    ERP_DB: (PLANT_ERP, {LOADER: "CONNECT", PUBLISHER: "CONNECT"}),
    EAM_DB: (PLANT_EAM, {LOADER: "CONNECT"}),
}
PLANT_WAREHOUSE_PRIVILEGES = {PLANT_TRUTH: "CONNECT, CREATE"}  # CREATE: schema truth only

# Session defaults of the warehouse database (ALTER DATABASE … SET, so every role's session gets
# them). jit off: the warehouse's queries are many short statements over thousands to a few
# million rows, and PostgreSQL decides to JIT-compile by the planner's cost, which the gate's
# correlated medians put in the millions: qa_row_counts_vs_history ran 1.67 s, 1.45 s of it
# compiling (0.21 s without). A deployment whose marts scan hundreds of millions of rows may
# measure and turn it on again here.
WAREHOUSE_SETTINGS = {"jit": "off"}


@dataclass(frozen=True)
class SchemaPolicy:
    """Who owns a warehouse schema (None: the superuser keeps it) and who may read it."""

    owner: str | None
    readers: tuple[str, ...] = ()  # USAGE and SELECT on every relation, now and later
    users: tuple[str, ...] = ()  # USAGE only: name look-ups (ensure_warehouse's check)


RAW_POLICY = SchemaPolicy(LOADER, readers=(TRANSFORMER,))  # every raw_<system>
SCHEMA_POLICIES = {
    "ops": SchemaPolicy(None, users=(LOADER, TRANSFORMER, PUBLISHER)),
    "staging": SchemaPolicy(TRANSFORMER),
    "conformed": SchemaPolicy(TRANSFORMER),
    "marts": SchemaPolicy(TRANSFORMER),
    "publish": SchemaPolicy(TRANSFORMER, readers=(PUBLISHER,)),
    "dq": SchemaPolicy(TRANSFORMER, readers=(PUBLISHER,), users=(LOADER,)),
    "dq_failures": SchemaPolicy(TRANSFORMER),  # the gate's stored failing rows
    "quality": SchemaPolicy(TRANSFORMER),  # the batches the gate's GX suites validate (qa_*)
    "snapshots": SchemaPolicy(TRANSFORMER),  # dbt snapshots (SCD2)
    "reporting": SchemaPolicy(TRANSFORMER, readers=(READER,)),
    "truth": SchemaPolicy(PLANT_TRUTH),
}
# Schemas a role may create (and rename to) itself, beside the superuser: SQL LIKE patterns.
# The transformer's: a dbt developer's own schemas (dev_<user>_staging, …; the dev target).
SCHEMA_CREATORS = {LOADER: "raw\\_%", PLANT_TRUTH: "truth", TRANSFORMER: "dev\\_%"}
# Created at set-up when missing: dbt would create them, which its role may not (it creates no
# schema; every schema the dbt project writes is here or in warehouse.schemas()).
SETUP_SCHEMAS = ("dq_failures", "snapshots", "quality")

READ = "SELECT"
WRITE = "SELECT, INSERT, UPDATE, DELETE"
# ops tables: the superuser owns them (ensure_warehouse creates them at set-up); each job gets
# what it does. First matching prefix wins; "" is the rest (the extraction's bookkeeping).
OPS_PREFIX_GRANTS = (
    ("erp_", {PUBLISHER: WRITE, TRANSFORMER: READ, LOADER: READ}),  # outbox, holds
    ("publish_", {PUBLISHER: WRITE, TRANSFORMER: READ}),
    ("transform_", {TRANSFORMER: WRITE}),
    ("gate_", {TRANSFORMER: WRITE, PUBLISHER: READ}),
    ("", {LOADER: WRITE, TRANSFORMER: READ}),
)


# --------------------------------------------------------------------------- passwords


def new_password() -> str:
    return _secrets.token_urlsafe(24)


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier for `password` (what PostgreSQL stores): `ALTER ROLE … PASSWORD`
    then carries no password, so no statement log or error can show one."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# --------------------------------------------------------------------------- cluster level


def is_superuser(conn) -> bool:
    return bool(conn.execute("select rolsuper from pg_roles where rolname = current_user")
                .fetchone()[0])


def ensure_role(conn, name: str, password: str | None) -> None:
    """Create or update a role: LOGIN with `password` (a verifier is stored), or NOLOGIN; never
    a superuser, never able to create roles or databases, bypass row security or replicate."""
    from psycopg import sql

    attributes = "nosuperuser nocreatedb nocreaterole noreplication nobypassrls inherit"
    login = sql.SQL("login password {}").format(sql.Literal(scram_verifier(password))) \
        if password else sql.SQL("nologin")
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
    verb = "alter" if exists else "create"
    conn.execute(sql.SQL("{} role {} {} {}").format(
        sql.SQL(verb), sql.Identifier(name), sql.SQL(attributes), login))
    # job roles resolve no unqualified name in a schema named like themselves ("$user")
    conn.execute(sql.SQL("alter role {} set search_path = public").format(sql.Identifier(name)))
    for powerful in ("pg_execute_server_program", "pg_read_server_files",
                     "pg_write_server_files", "pg_read_all_data", "pg_write_all_data"):
        if conn.execute("select pg_has_role(%s, %s, 'member')", (name, powerful)).fetchone()[0]:
            conn.execute(sql.SQL("revoke {} from {}").format(sql.Identifier(powerful),
                                                              sql.Identifier(name)))


def ensure_database(conn, name: str, owner: str | None) -> None:
    """Create the database if missing (owned by `owner`, else the superuser), hand it to
    `owner`, and take CONNECT and TEMPORARY from PUBLIC."""
    from psycopg import sql

    if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    if owner:
        conn.execute(sql.SQL("alter database {} owner to {}").format(
            sql.Identifier(name), sql.Identifier(owner)))
    conn.execute(sql.SQL("revoke connect, temporary on database {} from public").format(
        sql.Identifier(name)))


def configure_database(conn, name: str, settings: dict[str, str]) -> None:
    """The database's session defaults (`alter database … set`): every new session has them."""
    from psycopg import sql

    for setting, value in settings.items():
        conn.execute(sql.SQL("alter database {} set {} = {}").format(
            sql.Identifier(name), sql.Identifier(setting), sql.Literal(value)))


def grant_database(conn, name: str, grants: dict[str, str]) -> None:
    from psycopg import sql

    for role, privileges in grants.items():
        conn.execute(sql.SQL("grant {} on database {} to {}").format(
            sql.SQL(privileges), sql.Identifier(name), sql.Identifier(role)))


def adopt_database(dsn: str, owner: str) -> int:
    """Hand everything a superuser created in the database at `dsn` (schemas, relations, types,
    routines) to `owner` — an installation from before the roles, whose Airflow metadata or
    plant tables belong to the superuser. Returns how many objects changed hands."""
    import psycopg
    from psycopg import sql

    changed = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        system = ("select oid from pg_namespace where nspname in ('pg_catalog', "
                  "'information_schema') or nspname like 'pg\\_toast%' or nspname like 'pg\\_temp%'")
        supers = "select oid from pg_roles where rolsuper"
        for (name,) in conn.execute(
                f"select nspname from pg_namespace where nspowner in ({supers}) "
                f"and oid not in ({system}) and nspname <> 'public'").fetchall():
            conn.execute(sql.SQL("alter schema {} owner to {}").format(
                sql.Identifier(name), sql.Identifier(owner)))
            changed += 1
        relations = conn.execute(f"""
            select c.oid::regclass::text, c.relkind from pg_class c
            where c.relowner in ({supers}) and c.relnamespace not in ({system})
              and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
              and not (c.relkind = 'S' and exists (
                  select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                  and d.objid = c.oid and d.deptype in ('a', 'i')))""").fetchall()
        for name, kind in relations:
            keyword = {"v": "view", "m": "materialized view", "S": "sequence",
                       "f": "foreign table"}.get(kind, "table")
            conn.execute(sql.SQL("alter {} {} owner to {}").format(
                sql.SQL(keyword), sql.SQL(name), sql.Identifier(owner)))
            changed += 1
        for (name,) in conn.execute(f"""
                select t.oid::regtype::text from pg_type t
                where t.typowner in ({supers}) and t.typnamespace not in ({system})
                  and (t.typtype in ('e', 'd', 'r')
                       or (t.typtype = 'c'
                           and (select relkind from pg_class where oid = t.typrelid) = 'c'))
                """).fetchall():
            conn.execute(sql.SQL("alter type {} owner to {}").format(
                sql.SQL(name), sql.Identifier(owner)))
            changed += 1
        for (name,) in conn.execute(f"""
                select p.oid::regprocedure::text from pg_proc p
                where p.proowner in ({supers}) and p.pronamespace not in ({system})
                  and p.prokind in ('f', 'p')
                  and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass
                                  and d.objid = p.oid and d.deptype = 'e')""").fetchall():
            conn.execute(sql.SQL("alter routine {} owner to {}").format(
                sql.SQL(name), sql.Identifier(owner)))
            changed += 1
    return changed


# --------------------------------------------------------------------------- the warehouse


def _array(roles) -> str:
    return "array[" + ", ".join(f"'{r}'" for r in roles) + "]::name[]" if roles else "'{}'::name[]"


def _policy_sql() -> str:
    """`sfdp_schema_policy(schema)`: this module's SCHEMA_POLICIES as SQL, for the trigger."""
    def row(policy: SchemaPolicy) -> str:
        return (f"row({_owner(policy)}, {_array(policy.readers)}, "
                f"{_array(policy.users)})::public.sfdp_policy")

    branches = [f"when s like 'raw\\_%' then {row(RAW_POLICY)}"]
    branches += [f"when s = '{name}' then {row(policy)}"
                 for name, policy in SCHEMA_POLICIES.items()]
    creators = " or ".join(f"(r = '{role}' and s like '{pattern}')"
                           for role, pattern in SCHEMA_CREATORS.items())
    ops_cases = []
    for prefix, grants in OPS_PREFIX_GRANTS:
        grants_sql = "array[" + ", ".join(f"row('{role}', '{privs}')::public.sfdp_grant"
                                          for role, privs in grants.items()) + "]"
        ops_cases.append(f"when t like '{prefix.replace('_', chr(92) + '_')}%' then {grants_sql}")
    return f"""
do $$ begin
    if to_regtype('public.sfdp_policy') is null then
        create type public.sfdp_policy as (owner name, readers name[], users name[]);
    end if;
    if to_regtype('public.sfdp_grant') is null then
        create type public.sfdp_grant as (role name, privileges text);
    end if;
end $$;

create or replace function public.sfdp_schema_policy(s name) returns public.sfdp_policy
language sql immutable as $$
    select case {' '.join(branches)} else null::public.sfdp_policy end
$$;

create or replace function public.sfdp_may_create_schema(r name, s name) returns boolean
language sql immutable as $$ select {creators or 'false'} $$;

create or replace function public.sfdp_ops_grants(t name) returns public.sfdp_grant[]
language sql immutable as $$ select case {' '.join(ops_cases)} end $$;
"""


def _owner(policy: SchemaPolicy) -> str:
    return f"'{policy.owner}'::name" if policy.owner else "null::name"


APPLY_SQL = r"""
create or replace function public.sfdp_apply_relation(rel oid) returns void
language plpgsql set search_path = pg_catalog as $$
declare
    r record;
    p public.sfdp_policy;
    g public.sfdp_grant;
    reader name;
    seq text;
begin
    select c.oid::regclass::text as name, c.relkind, c.relname, n.nspname, c.relowner
      into r from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = rel;
    if not found or r.relkind not in ('r', 'p', 'v', 'm', 'f', 'S') then
        return;
    end if;
    if r.relkind = 'S' and exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                                   and d.objid = rel and d.deptype in ('a', 'i')) then
        return;  -- a column's sequence follows its table
    end if;
    if r.nspname = 'ops' and r.relkind <> 'S' then
        foreach g in array coalesce(public.sfdp_ops_grants(r.relname), '{}') loop
            execute format('grant %s on %s to %I', g.privileges, r.name, g.role);
            if g.privileges like '%INSERT%' then  -- serial and identity columns' sequences
                for seq in select d.objid::regclass::text from pg_depend d
                           join pg_class q on q.oid = d.objid and q.relkind = 'S'
                           where d.refobjid = rel and d.classid = 'pg_class'::regclass
                             and d.deptype in ('a', 'i') loop
                    execute format('grant usage, select on sequence %s to %I', seq, g.role);
                end loop;
            end if;
        end loop;
        return;
    end if;
    p := public.sfdp_schema_policy(r.nspname);
    if p.owner is null or not exists (select 1 from pg_roles where rolname = p.owner) then
        return;
    end if;
    if r.relowner <> (select oid from pg_roles where rolname = p.owner) then
        execute format('alter %s %s owner to %I',
                       case r.relkind when 'v' then 'view' when 'm' then 'materialized view'
                                      when 'S' then 'sequence' when 'f' then 'foreign table'
                                      else 'table' end, r.name, p.owner);
    end if;
    foreach reader in array p.readers loop
        execute format('grant select on %s to %I', r.name, reader);
    end loop;
end $$;

create or replace function public.sfdp_apply_schema(s name) returns void
language plpgsql set search_path = pg_catalog as $$
declare
    p public.sfdp_policy := public.sfdp_schema_policy(s);
    is_super boolean := (select rolsuper from pg_roles where rolname = current_user);
    role_name name;
    rel oid;
begin
    if p is null or not exists (select 1 from pg_namespace where nspname = s)
       or (p.owner is not null and not exists (select 1 from pg_roles where rolname = p.owner)) then
        return;
    end if;
    if p.owner is not null and is_super then
        if (select nspowner from pg_namespace where nspname = s)
           <> (select oid from pg_roles where rolname = p.owner) then
            execute format('alter schema %I owner to %I', s, p.owner);
        end if;
    end if;
    if not is_super and current_user is distinct from p.owner then
        return;
    end if;
    foreach role_name in array p.readers || p.users loop
        execute format('grant usage on schema %I to %I', s, role_name);
    end loop;
    if is_super then
        for rel in select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
                   where n.nspname = s and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S') loop
            perform public.sfdp_apply_relation(rel);
        end loop;
    end if;
    foreach role_name in array p.readers loop
        if p.owner is not null then
            execute format('alter default privileges for role %I in schema %I '
                           'grant select on tables to %I', p.owner, s, role_name);
        end if;
        if is_super then
            execute format('alter default privileges for role %I in schema %I '
                           'grant select on tables to %I', current_user, s, role_name);
        end if;
    end loop;
end $$;

create or replace function public.sfdp_on_ddl() returns event_trigger
language plpgsql set search_path = pg_catalog as $$
declare
    cmd record;
    is_super boolean := (select rolsuper from pg_roles where rolname = current_user);
    s name;
begin
    for cmd in select * from pg_event_trigger_ddl_commands() loop
        if cmd.object_type = 'schema' and cmd.command_tag in ('CREATE SCHEMA', 'ALTER SCHEMA') then
            s := (select nspname from pg_namespace where oid = cmd.objid);
            if s is null then
                continue;
            end if;
            if not is_super and not public.sfdp_may_create_schema(current_user, s) then
                raise exception 'role % may not create or name a schema %', current_user, s
                    using errcode = 'insufficient_privilege';
            end if;
            if cmd.command_tag = 'CREATE SCHEMA' then
                perform public.sfdp_apply_schema(s);
            end if;
        elsif is_super and cmd.classid = 'pg_class'::regclass
              and cmd.command_tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
                                      'CREATE VIEW', 'CREATE MATERIALIZED VIEW',
                                      'CREATE SEQUENCE', 'CREATE FOREIGN TABLE') then
            perform public.sfdp_apply_relation(cmd.objid);
        end if;
    end loop;
end $$;

revoke all on function public.sfdp_apply_relation(oid) from public;
revoke all on function public.sfdp_apply_schema(name) from public;
grant execute on function public.sfdp_apply_schema(name) to public;

do $$ begin
    if not exists (select 1 from pg_event_trigger where evtname = 'sfdp_on_ddl') then
        create event trigger sfdp_on_ddl on ddl_command_end execute function public.sfdp_on_ddl();
    end if;
end $$;
"""


def roles_exist(conn) -> bool:
    """The platform's roles are there (the plant's are not in a deployment)."""
    needed = (*PLATFORM_LOGINS, READER)
    return conn.execute("select count(*) = %s from pg_roles where rolname = any(%s)",
                        (len(needed), list(needed))).fetchone()[0]


def apply_warehouse_privileges(conn) -> None:
    """As the superuser, in the warehouse `conn` is connected to: install the event trigger and
    its policy functions, create the set-up schemas, and apply the matrix to every schema and
    relation there is (owners, readers, ops grants, default privileges). Idempotent.

    `conn`: a psycopg 3 connection of a superuser, autocommit or not (committed here)."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(20261202)")
        conn.execute(_policy_sql())
        conn.execute(APPLY_SQL)
        for schema in SETUP_SCHEMAS:
            conn.execute(f"create schema if not exists {schema}")
        # PUBLIC may create nothing in public (PostgreSQL 15 already says so; older clusters not)
        conn.execute("revoke create on schema public from public")
        for (schema,) in conn.execute("select nspname from pg_namespace order by 1").fetchall():
            conn.execute("select public.sfdp_apply_schema(%s)", (schema,))
        conn.execute("select public.sfdp_apply_relation(c.oid) from pg_class c "
                     "join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'ops'")


def apply_plant_privileges(dsn: str, system: str) -> None:
    """As the superuser, after the simulated plant (re)loaded its `system` database (erp or
    eam): the loader reads its tables; in the ERP the publisher may only call the inbound
    function `erp.post_message`, which runs with the ERP's rights (SECURITY DEFINER, fixed
    search_path), and nobody else may call any ERP function. Idempotent."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        if not conn.execute("select 1 from pg_namespace where nspname = %s", (system,)).fetchone():
            return
        conn.execute(f"grant usage on schema {system} to {LOADER}")
        conn.execute(f"grant select on all tables in schema {system} to {LOADER}")
        conn.execute(f"revoke execute on all functions in schema {system} from public")
        if system == "erp":
            post = conn.execute("select to_regprocedure('erp.post_message(text, text, jsonb)')"
                                ).fetchone()[0]
            if post:
                conn.execute(f"alter function {post} security definer "
                             "set search_path = pg_catalog, erp, pg_temp")
                conn.execute(f"grant usage on schema erp to {PUBLISHER}")
                conn.execute(f"grant execute on function {post} to {PUBLISHER}")
