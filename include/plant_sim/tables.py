"""Streaming CSV tables (declared once: name → [(column, Postgres type)]) and their COPY loader.

Used for the truth and for the ERP/EAM databases: generation writes `<folder>/<table>.csv`,
`load` (re)creates the schema and COPYs the files.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, TextIO

Spec = dict[str, list[tuple[str, str]]]


def fmt(value: Any) -> str:
    """Deterministic CSV text for a value (None → empty = SQL NULL)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class TableWriter:
    """Streams rows to one UTF-8 CSV per table (header first)."""

    def __init__(self, folder: Path, spec: Spec) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.spec = spec
        self.files: dict[str, TextIO] = {}
        self.writers: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        for name, cols in spec.items():
            fh = open(folder / f"{name}.csv", "w", encoding="utf-8", newline="")  # noqa: SIM115
            self.files[name] = fh
            w = csv.writer(fh, lineterminator="\n")
            w.writerow([c for c, _ in cols])
            self.writers[name] = w
            self.counts[name] = 0

    def row(self, table: str, values: dict[str, Any]) -> None:
        """Write one row; `values` must have exactly the table's columns."""
        cols = self.spec[table]
        if len(values) != len(cols):
            diff = {c for c, _ in cols} ^ set(values)
            raise ValueError(f"{table}: column mismatch {sorted(diff)}")
        self.writers[table].writerow([fmt(values[c]) for c, _ in cols])
        self.counts[table] += 1

    def close(self) -> None:
        """Close every file."""
        for fh in self.files.values():
            fh.close()


def ddl(schema: str, spec: Spec, keys: dict[str, str] | None = None) -> list[str]:
    """CREATE TABLE statements (optional primary keys: table → column list)."""
    out = []
    for name, cols in spec.items():
        body = [f"{c} {t}" for c, t in cols]
        if keys and name in keys:
            body.append(f"PRIMARY KEY ({keys[name]})")
        out.append(f"CREATE TABLE {schema}.{name} (\n  " + ",\n  ".join(body) + "\n)")
    return out


def copy_tables(cur: Any, schema: str, spec: Spec, folder: Path) -> dict[str, int]:
    """COPY every `<folder>/<table>.csv` into `schema.table`; returns row counts."""
    counts: dict[str, int] = {}
    for name, cols in spec.items():
        path = folder / f"{name}.csv"
        if not path.exists():
            counts[name] = 0
            continue
        colnames = ", ".join(c for c, _ in cols)
        sql = f"COPY {schema}.{name} ({colnames}) FROM STDIN WITH (FORMAT csv, HEADER true)"
        with cur.copy(sql) as copy, open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
        cur.execute(f"SELECT count(*) FROM {schema}.{name}")
        counts[name] = cur.fetchone()[0]
    return counts
