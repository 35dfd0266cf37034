"""A developer's `dbt build --target dev` writes only the developer's own schemas
(`<prefix>_staging`, `<prefix>_marts`, …; macros/generate_schema_name.sql): every production
relation — raw_*, ops, staging, conformed, marts, publish, quality, reporting, dq, dq_failures,
snapshots, truth — is the same relation afterwards (oid and file node: not dropped, re-created or
rewritten) with the same rows (md5 of its ordered rows) and, for a view, the same definition.
The dev schemas hold every model, with the production rows where both come from the same raw
data."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from _pipeline import build_whole_plant, changing_the_build, dbt
from psycopg import sql

pytestmark = pytest.mark.slow

DEV_PREFIX = "dev_sfdp_test"
# built by both from the same raw rows: the dev copies must equal production's
SAME_ROWS = ("conformed.fct_operation_confirmation", "marts.mart_oee_shift",
             "marts.mart_production_line_day", "publish.pub_erp__production_confirmation")


def production_relations(dsn: str) -> dict[str, tuple]:
    """Every relation outside the dev schemas: kind, oid, file node, view definition, row
    count and md5 of its ordered rows (a view's rows follow its tables, and some read the
    clock: its definition stands for it)."""
    with psycopg.connect(dsn) as conn:
        relations = conn.execute(r"""
            select n.nspname, c.relname, c.relkind::text, c.oid::bigint, c.relfilenode::bigint,
                   case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end
            from pg_class as c
            inner join pg_namespace as n on n.oid = c.relnamespace
            where c.relkind in ('r', 'p', 'v', 'm')
              and n.nspname not like 'dev\_%' and n.nspname not like 'pg\_%'
              and n.nspname <> 'information_schema'
            order by 1, 2""").fetchall()
        found = {}
        for schema, name, kind, oid, filenode, definition in relations:
            rows = (None, None)
            if kind in ("r", "p", "m"):
                rows = conn.execute(sql.SQL(
                    "select count(*), md5(coalesce(string_agg(h, '' order by h), '')) "
                    "from (select md5(t::text) as h from {} as t) as hashed"
                ).format(sql.Identifier(schema, name))).fetchone()
            found[f"{schema}.{name}"] = (kind, oid, filenode, definition, *rows)
    return found


def table_digest(dsn: str, relation: str) -> tuple:
    schema, name = relation.split(".")
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL(
            "select count(*), md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) "
            "from {} as t").format(sql.Identifier(schema, name))).fetchone()


def drop_dev_schemas(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        schemas = [r[0] for r in conn.execute(
            "select nspname from pg_namespace where nspname like %s", (f"{DEV_PREFIX}\\_%",))]
        for schema in schemas:
            conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(schema)))
    return schemas


def test_a_dev_build_leaves_every_production_relation_byte_identical(
        plant, warehouse_dsn, tmp_path, monkeypatch):
    build_whole_plant(plant, warehouse_dsn)
    drop_dev_schemas(warehouse_dsn)
    monkeypatch.setenv("DBT_DEV_SCHEMA_PREFIX", DEV_PREFIX)
    started = time.monotonic()
    before = production_relations(warehouse_dsn)
    hashing = time.monotonic() - started
    try:
        with changing_the_build(warehouse_dsn, restored=True):
            started = time.monotonic()
            # the whole project: models, seeds, snapshots, tests (the gate's, which store their
            # failing rows, included); a failing gate test is a result, not an error here
            result = dbt("build", "--target", "dev", "--target-path", str(tmp_path),
                         "--threads", "4", check=False)
            print(f"\ndev build {time.monotonic() - started:.0f} s, hashing "
                  f"{len(before)} production relations {hashing:.0f} s")
            after = production_relations(warehouse_dsn)
            changed = sorted(name for name in before.keys() | after.keys()
                             if before.get(name) != after.get(name))
            assert changed == []
            statuses = {r["unique_id"]: r["status"] for r in json.loads(
                (tmp_path / "run_results.json").read_text())["results"]}
            built = {uid: status for uid, status in statuses.items()
                     if uid.split(".")[0] in ("model", "seed", "snapshot")}
            assert len(built) >= 80, result.stdout[-3000:]
            assert {uid: s for uid, s in built.items() if s != "success"} == {}
            for relation in SAME_ROWS:
                layer, name = relation.split(".")
                production = table_digest(warehouse_dsn, relation)
                assert production[0] > 0, relation
                assert table_digest(warehouse_dsn, f"{DEV_PREFIX}_{layer}.{name}") == production
    finally:
        dropped = drop_dev_schemas(warehouse_dsn)
    assert {f"{DEV_PREFIX}_{layer}" for layer in ("staging", "conformed", "marts", "publish",
                                                    "reporting", "snapshots", "dq_failures")
            } <= set(dropped)
