"""The `reporting` schema for people and BI tools: its read-only role and the per-run HTML report.

The dbt models in `dbt_project/models/reporting/` build the gated `rpt_*` views; BI tools log in
with a role that is a member of `reporting_reader` and can read those views and nothing else:
no mart, no ops or dq table, no other database (the platform's set-up grants it CONNECT on the
warehouse only, factory_platform/roles.py; `reporting` holds no ungated copy of a mart). The
report's own login, sfdp_reporter, is such a member. `render.render_report` turns the same views
into one self-contained HTML page per run.
"""

from __future__ import annotations

REPORTING_SCHEMA = "reporting"
READER_ROLE = "reporting_reader"


def ensure_reporting_reader(conn, role: str = READER_ROLE, schema: str = REPORTING_SCHEMA) -> None:
    """Create the NOLOGIN `role` if it is missing and let it read `schema` of the current
    database: CONNECT on the database, USAGE on the schema, SELECT on every table and view in it
    now, and SELECT on those the current user creates later (default privileges; dbt re-creates
    a view on every run, which drops its grants). Grants nothing else. Idempotent; safe against
    a concurrent caller creating the role. (The platform's warehouse gets the same from
    factory_platform.roles at set-up; this serves a database of its own, e.g. a BI copy.)

    `conn` is a psycopg 3 connection; the statements run in one transaction block (a savepoint
    when the caller has a transaction open, which the caller then commits)."""
    from psycopg import sql

    role_id = sql.Identifier(role)
    schema_id = sql.Identifier(schema)
    create_role = sql.SQL(
        "do $$ begin "
        "if not exists (select from pg_catalog.pg_roles where rolname = {name}) then "
        "create role {role} nologin; "
        "end if; "
        "exception when duplicate_object or unique_violation then null; "
        "end $$"
    ).format(name=sql.Literal(role), role=role_id)
    with conn.transaction():
        conn.execute(create_role)
        conn.execute(sql.SQL("grant connect on database {} to {}").format(
            sql.Identifier(conn.info.dbname), role_id))
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema_id, role_id))
        conn.execute(
            sql.SQL("grant select on all tables in schema {} to {}").format(schema_id, role_id)
        )
        conn.execute(
            sql.SQL("alter default privileges in schema {} grant select on tables to {}").format(
                schema_id, role_id
            )
        )
