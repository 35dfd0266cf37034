"""The truth: what really happened, written as CSV beside the data and loaded into `truth.*`.

Every table is declared once in `TABLES` (column, Postgres type); the generator writes one CSV
per table under `<world>/truth/`, and `load_truth` (re)creates schema `truth` and COPYs them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, TextIO

TABLES: dict[str, list[tuple[str, str]]] = {
    "world": [
        ("world_name", "text"),
        ("seed", "bigint"),
        ("config_sha256", "text"),
        ("start_date", "date"),
        ("days", "integer"),
    ],
    "shift_calendar": [
        ("site_code", "text"),
        ("production_date", "date"),
        ("shift_code", "text"),
        ("shift_start_at", "timestamptz"),
        ("shift_end_at", "timestamptz"),
        ("shift_seconds", "integer"),
    ],
    "oee_machine_shift": [
        ("site_code", "text"),
        ("line_code", "text"),
        ("machine_code", "text"),
        ("production_date", "date"),
        ("shift_code", "text"),
        ("shift_start_at", "timestamptz"),
        ("shift_end_at", "timestamptz"),
        ("pbt_seconds", "bigint"),
        ("apt_seconds", "bigint"),
        ("pri_seconds", "double precision"),
        ("pq", "bigint"),
        ("gq", "bigint"),
        ("sq", "bigint"),
        ("rq", "bigint"),
        ("setup_seconds", "bigint"),
        ("idle_seconds", "bigint"),
        ("planned_downtime_seconds", "bigint"),
        ("unplanned_downtime_seconds", "bigint"),
        ("availability", "double precision"),
        ("effectiveness", "double precision"),
        ("quality_ratio", "double precision"),
        ("oee", "double precision"),
    ],
    "production_line_day": [
        ("site_code", "text"),
        ("line_code", "text"),
        ("production_date", "date"),
        ("good_qty", "bigint"),
        ("scrap_qty", "bigint"),
        ("rework_qty", "bigint"),
    ],
}
"""Truth tables: name → columns. Extended by the other systems (see README "Truth")."""


def fmt(value: Any) -> str:
    """Deterministic CSV text for a value (None → empty = SQL NULL)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class TruthWriter:
    """Streams truth rows to one CSV per table (header first)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.files: dict[str, TextIO] = {}
        self.writers: dict[str, Any] = {}
        for name, cols in TABLES.items():
            fh = open(folder / f"{name}.csv", "w", encoding="utf-8", newline="")
            self.files[name] = fh
            w = csv.writer(fh, lineterminator="\n")
            w.writerow([c for c, _ in cols])
            self.writers[name] = w

    def row(self, table: str, values: dict[str, Any]) -> None:
        """Write one row; `values` must have exactly the table's columns."""
        cols = TABLES[table]
        if len(values) != len(cols):
            missing = {c for c, _ in cols} ^ set(values)
            raise ValueError(f"truth.{table}: column mismatch {sorted(missing)}")
        self.writers[table].writerow([fmt(values[c]) for c, _ in cols])

    def close(self) -> None:
        """Close every file."""
        for fh in self.files.values():
            fh.close()


def ddl(schema: str = "truth") -> list[str]:
    """CREATE TABLE statements for every truth table."""
    out = []
    for name, cols in TABLES.items():
        body = ",\n  ".join(f"{c} {t}" for c, t in cols)
        out.append(f"CREATE TABLE {schema}.{name} (\n  {body}\n)")
    return out


def load_truth(world: Path, dsn: str) -> dict[str, int]:
    """Drop and recreate schema `truth` in the database at `dsn`, COPY every truth CSV."""
    import psycopg

    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS truth CASCADE")
            cur.execute("CREATE SCHEMA truth")
            cur.execute(
                "COMMENT ON SCHEMA truth IS 'Ground truth written by the plant simulator "
                "(plant_sim); tests compare marts with it.'"
            )
            for stmt in ddl():
                cur.execute(stmt)
            for name, cols in TABLES.items():
                path = world / "truth" / f"{name}.csv"
                if not path.exists():
                    counts[name] = 0
                    continue
                colnames = ", ".join(c for c, _ in cols)
                with cur.copy(
                    f"COPY truth.{name} ({colnames}) FROM STDIN WITH (FORMAT csv, HEADER true)"
                ) as copy:
                    with open(path, "rb") as fh:
                        while chunk := fh.read(1 << 20):
                            copy.write(chunk)
                cur.execute(f"SELECT count(*) FROM truth.{name}")
                counts[name] = cur.fetchone()[0]
        conn.commit()
    return counts
