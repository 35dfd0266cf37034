"""The chaos run's reconciliation: every record the plant emitted, found by its identity in
raw, in `ops.quarantine`, or as a byte-identical re-send — never by subtracting counts.

* REST (mes, qms): every record version of the world's change feeds
  (`<world>/<system>/<system>.sqlite`, column `body`), as (natural key, `updated_at`). Loaded if
  that pair is in `raw_<system>.<entity>`; quarantined if the key is a `record_ref` of the
  entity's `ops.quarantine` rows.
* Files (wms, scada, ems: delimited; plm: XML): the ORIGINAL content (`<world>/drops/…`) of every
  file the plant delivered (its ledger `<inbox>/.plant_sim_dropped`; broken re-deliveries are
  faults, not content). Each data line / XML record maps to its registry natural key. Loaded if
  the key is in raw (any `_source`); quarantined if `ops.quarantine` holds the file's line
  (`line N`, XML: `… (line N)`) or the whole file (`file`); a file byte-identical to another
  delivered file of its system (WMS `…_RESEND.csv`) counts as duplicates.
* SQL (erp, eam): every row of the source table (the plant's database at the end), by natural
  key.

A record counts as "not due" only when it lies after the end of the last interval the final
round extracted for its system (REST: `updated_at`; SQL: the time the registry places the row
by) — none in a full run, whose drain goes far past the world's end. Anything else not found is
LOST, and listed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from factory_platform.fields import PARSERS
from factory_platform.sources import all_sources

REST = ("mes", "qms")
FILES = ("wms", "scada", "ems", "plm")
SQL = ("erp", "eam")

# SQL entities placed in time by the extractor (registry docstrings of erp.py / eam.py): when a
# row is due. Snapshots are always due.
_ERP_ZONE = "(select timezone from erp.plants p where p.plant_code = t.plant_code)"
SQL_DUE = {
    ("erp", "sales_orders"): "created_at at time zone "
                             "(select timezone from erp.plants order by plant_code limit 1)",
    ("erp", "production_orders"): f"released_at at time zone {_ERP_ZONE}",
    ("erp", "purchase_orders"): f"ordered_at at time zone {_ERP_ZONE}",
    ("erp", "inventory_balances"): f"balance_date::timestamp at time zone {_ERP_ZONE}",
    ("erp", "inbound_postings"): "received_at",
    ("eam", "failures"): "coalesce(ended_at, reported_at, started_at)",
    ("eam", "maintenance_orders"): "coalesce(actual_end_at, actual_start_at, planned_start_at)",
}


@dataclass
class Tally:
    system: str
    entity: str
    emitted: int = 0
    loaded: int = 0
    quarantined: int = 0
    duplicates: int = 0
    not_due: int = 0
    lost: int = 0
    raw_rows: int = 0
    lost_records: list = field(default_factory=list)

    def lose(self, what: str) -> None:
        self.lost += 1
        self.lost_records.append(what)


def norm(value) -> str | None:
    """One comparable text per value, the same for a parsed source value and a raw column."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return f"@{value.timestamp():.6f}" if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def key_of(payload: dict, names: tuple[str, ...], types: dict[str, str]) -> str | None:
    """The natural key of a source record, typed as the loader types it; None if it does not
    parse (such a record can only be quarantined)."""
    parts = []
    for name in names:
        raw = payload.get(name)
        if raw is None or raw == "":
            return None
        try:
            parts.append(norm(PARSERS[types[name]](raw)))
        except Exception:  # noqa: BLE001 — unparseable: not loadable by key
            return None
    return "\x1f".join(parts)


def raw_keys(conn, system: str, entity, columns: tuple[str, ...]) -> tuple[set[str], int]:
    cols = ", ".join(f'"{c}"' for c in columns)
    keys: set[str] = set()
    rows = 0
    with conn.cursor(name=f"keys_{system}_{entity}") as cur:
        cur.itersize = 50_000
        cur.execute(f"select {cols} from raw_{system}.{entity}")
        for row in cur:
            rows += 1
            keys.add("\x1f".join(norm(v) for v in row))
    return keys, rows


def quarantine_refs(conn, system: str, entity: str) -> set[tuple[str, str]]:
    return set(conn.execute(
        "select source, record_ref from ops.quarantine where system = %s and entity = %s",
        (system, entity)).fetchall())


# --- REST ------------------------------------------------------------------------------------------

def reconcile_rest(conn, world: Path, system: str, final_end: datetime | None) -> list[Tally]:
    out = []
    db = sqlite3.connect(f"file:{world / system / f'{system}.sqlite'}?mode=ro", uri=True)
    try:
        for entity in all_sources()[system].entities:
            t = Tally(system, entity.name)
            types = {f.name: f.type for f in entity.fields}
            key = entity.natural_key[0]
            loaded, t.raw_rows = raw_keys(conn, system, entity.name, (key, "updated_at"))
            refs = {ref for _src, ref in quarantine_refs(conn, system, entity.name)}
            seen: set[str] = set()
            for (body,) in db.execute(f"select body from {entity.name}"):
                record = json.loads(body)
                t.emitted += 1
                updated = PARSERS["timestamptz"](record["updated_at"])
                if final_end is None or updated >= final_end:
                    t.not_due += 1
                    continue
                identity = key_of(record, (key, "updated_at"), types)
                if identity in seen:
                    t.duplicates += 1
                    continue
                seen.add(identity)
                if identity is not None and identity in loaded:
                    t.loaded += 1
                elif str(record.get(key)) in refs:
                    t.quarantined += 1
                else:
                    t.lose(f"{key}={record.get(key)} updated_at={record['updated_at']}")
            out.append(t)
    finally:
        db.close()
    return out


# --- files -----------------------------------------------------------------------------------------

def delivered_files(inbox: Path) -> dict[str, list[str]]:
    """system → names the plant delivered (its ledger), originals only."""
    ledger = inbox / ".plant_sim_dropped"
    out: dict[str, list[str]] = defaultdict(list)
    if ledger.exists():
        for key in sorted(set(ledger.read_text(encoding="utf-8").split())):
            if "#" in key:
                continue
            system, name = key.split("/", 1)
            out[system].append(name)
    return out


def _delimited_records(data: bytes, encoding: str):
    """(line number, payload or None, text) of each data line of an original export."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        return
    header = lines[0].rstrip(b"\r").decode(encoding).split(";")
    for number, raw in enumerate(lines[1:], start=2):
        text = raw.rstrip(b"\r").decode(encoding, "replace")
        values = next(csv.reader([text], delimiter=";"), [])
        payload = dict(zip(header, values)) if len(values) == len(header) else None
        yield number, payload, text


def _xml_records(data: bytes, kind: str):
    """(line, payload) of each record of one kind in a PLM export (parsed safely)."""
    from lxml import etree

    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True,
                                                  load_dtd=False))
    exported = root.get("exportedAt")
    if kind == "items":
        for el in root.iterfind("Items/Item"):
            yield el.sourceline, {"number": el.get("number"), "revision": el.get("revision"),
                                  "exported_at": exported}
    elif kind == "bom_lines":
        for bom in root.iterfind("BOMs/BOM"):
            for el in bom.iterfind("Component"):
                yield el.sourceline, {"parent_number": bom.get("parent"),
                                      "bom_revision": bom.get("revision"),
                                      "component_number": el.get("number"),
                                      "exported_at": exported}
    elif kind == "ecos":
        for el in root.iterfind("ECOs/ECO"):
            yield el.sourceline, {"eco_number": el.get("number"), "exported_at": exported}


def reconcile_files(conn, world: Path, inbox: Path, system: str) -> list[Tally]:
    source = all_sources()[system]
    names = delivered_files(inbox).get(system, [])
    # byte-identical re-sends: the first name of each content is the original
    first_of: dict[str, str] = {}
    duplicate_files: set[str] = set()
    for name in sorted(names):
        digest = hashlib.sha256((world / "drops" / system / name).read_bytes()).hexdigest()
        if digest in first_of:
            duplicate_files.add(name)
        else:
            first_of[digest] = name
    out = []
    for entity in source.entities:
        t = Tally(system, entity.name)
        types = {f.name: f.type for f in entity.fields}
        regex = re.compile(entity.endpoint)
        loaded, t.raw_rows = raw_keys(conn, system, entity.name, entity.natural_key)
        refs = quarantine_refs(conn, system, entity.name)
        whole = {src for src, ref in refs if ref == "file"}
        by_file: dict[str, set[str]] = defaultdict(set)
        for src, ref in refs:
            by_file[src].add(ref)
        for name in names:
            if not regex.fullmatch(name):
                continue
            data = (world / "drops" / system / name).read_bytes()
            if source.interface == "xml_drop":
                records = [(f"(line {line})", payload, f"line {line}")
                           for line, payload in _xml_records(data, entity.name)]
            else:
                records = [(f"line {n}", payload, text)
                           for n, payload, text in _delimited_records(data, source.encoding)]
            for ref, payload, text in records:
                t.emitted += 1
                if name in duplicate_files:
                    t.duplicates += 1
                    continue
                identity = key_of(payload, entity.natural_key, types) if payload else None
                if identity is not None and identity in loaded:
                    t.loaded += 1
                elif name in whole or ref in by_file[name] or (
                        ref.startswith("(") and any(r.endswith(ref) for r in by_file[name])):
                    t.quarantined += 1
                else:
                    t.lose(f"{name} {ref}: {text[:120]}")
        out.append(t)
    return out


# --- SQL -------------------------------------------------------------------------------------------

def reconcile_sql(conn, source_conn, system: str, final_end: datetime | None) -> list[Tally]:
    out = []
    for entity in all_sources()[system].entities:
        t = Tally(system, entity.name)
        loaded, t.raw_rows = raw_keys(conn, system, entity.name, entity.natural_key)
        cols = ", ".join(f't."{c}"' for c in entity.natural_key)
        due = SQL_DUE.get((system, entity.name))
        rows = source_conn.execute(
            f"select {cols}, {due or 'null::timestamptz'} from {entity.endpoint} t").fetchall()
        for row in rows:
            t.emitted += 1
            at = row[-1]
            if due is not None and (final_end is None or at is None or at >= final_end):
                t.not_due += 1
                continue
            identity = "\x1f".join(norm(v) for v in row[:-1])
            if identity in loaded:
                t.loaded += 1
            else:
                t.lose(", ".join(f"{c}={v}" for c, v in zip(entity.natural_key, row[:-1])))
        out.append(t)
    return out


def reconcile(warehouse_dsn: str, plant_dsns: dict[str, str], world: Path, inbox: Path,
              final_ends: dict[str, datetime]) -> list[Tally]:
    import psycopg

    tallies: list[Tally] = []
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute("set timezone = 'UTC'")
        for system in all_sources():
            if system in REST:
                tallies += reconcile_rest(conn, world, system, final_ends.get(system))
            elif system in FILES:
                tallies += reconcile_files(conn, world, inbox, system)
            elif system in SQL:
                with psycopg.connect(plant_dsns[system]) as source_conn:
                    source_conn.execute("set timezone = 'UTC'")
                    tallies += reconcile_sql(conn, source_conn, system, final_ends.get(system))
    return tallies
