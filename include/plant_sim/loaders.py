"""`load`: put a generated world's truth, ERP and EAM into Postgres.

ERP and EAM rows carry `_visible_at` (UTC). They are COPYed into a staging schema
`sim_pending_<system>` and moved into the system's schema once the clock passes `_visible_at`
(`load` alone moves everything; `serve --clock live` keeps moving rows as time passes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plant_sim.tables import Spec, copy_tables, ddl
from plant_sim.truth import load_truth


def _systems() -> dict[str, tuple[Spec, dict[str, str], str]]:
    from plant_sim.systems import eam, erp

    return {
        "erp": (erp.SPEC, erp.KEYS, erp.INBOUND_SQL),
        "eam": (eam.SPEC, eam.KEYS, ""),
    }


def _public(spec: Spec) -> Spec:
    return {
        t: [c for c in cols if not c[0].startswith("_")] for t, cols in spec.items()
    }


def load_system(
    world: Path, system: str, dsn: str, visible_until: str = "infinity"
) -> dict[str, int]:
    """(Re)create schema `<system>` (+ staging) in `dsn`, COPY the CSVs, move visible rows."""
    import psycopg

    spec, keys, extra = _systems()[system]
    pending = f"sim_pending_{system}"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {system} CASCADE")
        cur.execute(f"DROP SCHEMA IF EXISTS {pending} CASCADE")
        cur.execute(f"CREATE SCHEMA {system}")
        cur.execute(f"CREATE SCHEMA {pending}")
        cur.execute(
            f"COMMENT ON SCHEMA {pending} IS 'plant_sim plumbing: rows not yet "
            f"visible in {system} (live clock). Not part of the {system} interface.'"
        )
        for stmt in ddl(system, _public(spec), keys):
            cur.execute(stmt)
        for stmt in ddl(pending, spec):
            cur.execute(stmt)
        copy_tables(cur, pending, spec, world / system)
        if extra:
            cur.execute(extra)
        conn.commit()
    move_visible(dsn, system, visible_until)
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {system}.{t}").fetchone()[0]
            for t in spec
        }


def move_visible(dsn: str, system: str, until: str) -> int:
    """Move staged rows with `_visible_at <= until` into the system's tables; returns rows moved."""
    import psycopg

    spec, _keys, _extra = _systems()[system]
    pending = f"sim_pending_{system}"
    moved = 0
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for table, cols in _public(spec).items():
            names = ", ".join(c for c, _ in cols)
            cur.execute(
                f"WITH m AS (DELETE FROM {pending}.{table} WHERE _visible_at <= %s::timestamptz "
                f"RETURNING {names}) INSERT INTO {system}.{table} ({names}) SELECT {names} FROM m",
                (until,),
            )
            moved += cur.rowcount
        conn.commit()
    return moved


def load_world(
    world: Path,
    truth_dsn: str | None,
    erp_dsn: str | None = None,
    eam_dsn: str | None = None,
    visible_until: str = "infinity",
) -> dict[str, Any]:
    """Load truth into `truth_dsn`; ERP/EAM tables into their databases when DSNs are given."""
    out: dict[str, Any] = {}
    if truth_dsn:
        out["truth"] = load_truth(world, truth_dsn)
    if erp_dsn:
        out["erp"] = load_system(world, "erp", erp_dsn, visible_until)
    if eam_dsn:
        out["eam"] = load_system(world, "eam", eam_dsn, visible_until)
    return out
