"""The dbt dev target runs as the transformer (`make dbt-dev` with make run's connection): the
transformer may create a developer's own `dev_*` schemas, and still no other schema (roles.py,
SCHEMA_CREATORS)."""

from __future__ import annotations

import psycopg
import pytest
from factory_platform import roles
from launcher.settings import load_or_create_secrets
from launcher.settings import test_instance as _test_instance
from psycopg import errors

INSTANCE = _test_instance()


def transformer_dsn() -> str:
    secret = load_or_create_secrets(INSTANCE)
    return psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=INSTANCE.pg_port, user=roles.TRANSFORMER, dbname="warehouse",
        password=secret[roles.PASSWORD_ENV[roles.TRANSFORMER]])


def test_the_transformer_creates_dev_schemas_and_no_other():
    with psycopg.connect(transformer_dsn(), autocommit=True) as conn:
        conn.execute("drop schema if exists dev_privprobe_staging cascade")
        conn.execute("create schema dev_privprobe_staging")
        conn.execute("create table dev_privprobe_staging.probe as select 1 as probe_id")
        owner = conn.execute("select nspowner::regrole::text from pg_namespace "
                             "where nspname = 'dev_privprobe_staging'").fetchone()[0]
        conn.execute("drop schema dev_privprobe_staging cascade")
        assert owner == roles.TRANSFORMER
        for schema in ("staging_copy", "devx_staging", "raw_dev_probe"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"create schema {schema}")
