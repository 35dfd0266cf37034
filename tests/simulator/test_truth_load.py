"""`load` puts the truth into schema `truth` of a Postgres database, value for value."""

from __future__ import annotations

import csv
from pathlib import Path

from plant_sim.loaders import load_world
from plant_sim.truth import TABLES


def test_truth_loaded_exactly(pg, small_world: Path) -> None:
    import psycopg

    counts = load_world(small_world, pg.dsn)["truth"]
    for name in TABLES:
        with open(small_world / "truth" / f"{name}.csv", encoding="utf-8") as fh:
            assert counts[name] == sum(1 for _ in csv.DictReader(fh)), name
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        row = conn.execute(
            "select sum(gq), sum(pq), count(*), min(shift_end_at - shift_start_at), "
            "max(shift_end_at - shift_start_at)::text from truth.oee_machine_shift"
        ).fetchone()
        with open(
            small_world / "truth" / "oee_machine_shift.csv", encoding="utf-8"
        ) as fh:
            rows = list(csv.DictReader(fh))
        assert row[0] == sum(int(r["gq"]) for r in rows)
        assert row[1] == sum(int(r["pq"]) for r in rows)
        assert row[2] == 36
        assert row[4] == "09:00:00"
        # reload replaces, never appends
        load_world(small_world, pg.dsn)
        assert (
            conn.execute("select count(*) from truth.oee_machine_shift").fetchone()[0]
            == 36
        )
