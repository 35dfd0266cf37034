"""Helpers for the file-drop fault tests: private copies of the registry's file sources, each
pointed at its own inbox (an `fs` connection in the environment) and its own `raw_<slug>`
schema; delivered-file builders; counts from the warehouse. Run as a script, it is the child
process of the memory tests (`python _file_helpers.py <mode> <json args>`): it loads or reads
what the parent prepared and prints its own peak RSS."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

HOUR = datetime(2026, 10, 20, 5, tzinfo=UTC)
EMS_HEADER = "meter_id;machine_code;interval_start;interval_end;kwh"
SCADA_HEADER = "ts;machine_code;tag;value;quality"
WMS_HEADER = ("movement_id;movement_type;event_time;site;material;material_desc;lot;qty;unit;"
              "from_loc;to_loc;reference")
SLUG_PREFIX = "ff"


def slug_of(system: str) -> str:
    return f"{SLUG_PREFIX}{system}"


def conn_env(slug: str, inbox: Path) -> tuple[str, str]:
    return (f"AIRFLOW_CONN_{slug.upper()}_DROPS",
            json.dumps({"conn_type": "fs", "extra": {"path": str(inbox)}}))


def private_source(system: str, **changes):
    """A copy of a registry source under its own slug and connection."""
    from factory_platform.sources import get_source

    slug = slug_of(system)
    return dataclasses.replace(get_source(system), system=slug, conn_id=f"{slug}_drops",
                               **changes)


def window_of(source, start: datetime = HOUR, length: timedelta = timedelta(hours=1)):
    from factory_platform.extract.clients import Window

    return Window(start - source.lookback, start + length, start, start + length)


def run_entity(dsn: str, source, entity: str, start: datetime = HOUR,
               length: timedelta = timedelta(hours=1)):
    """The real client and loader for one interval; returns (LoadResult, Extraction)."""
    from factory_platform.extract.clients import client_for
    from factory_platform.extract.load import load_batch
    from factory_platform.extract.run import load_target

    window = window_of(source, start, length)
    extraction = client_for(source.interface).open_extraction(
        source, source.entity(entity), window)
    result = load_batch(dsn, load_target(source, source.entity(entity)), extraction,
                        interval_start=window.interval_start, interval_end=window.interval_end,
                        window_start=window.start)
    return result, extraction


def age(path: Path, seconds: float = 3600) -> Path:
    """Date a delivered file `seconds` back (past the settle time)."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def deliver(inbox: Path, name: str, data: bytes, age_s: float | None = 3600) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_bytes(data)
    if age_s is not None:
        age(path, age_s)
    return path


def body(header: str, lines: list[str], end: str = "\n", encoding: str = "utf-8") -> bytes:
    return (end.join([header, *lines]) + end).encode(encoding)


def ems_name(site: str = "ERF", hour: datetime = HOUR) -> str:
    return f"EMS_READINGS_{site}_{hour:%Y%m%dT%H}00Z.csv"


def ems_lines(n: int = 8, kwh: str | None = None, machine: str = "M") -> list[str]:
    local = timezone(timedelta(hours=2))
    start = datetime(2026, 10, 20, 7, tzinfo=local)
    return [f"EM-{machine}{i % 2};{machine}{i % 2};"
            f"{(start + timedelta(minutes=15 * (i // 2))).isoformat()};"
            f"{(start + timedelta(minutes=15 * (i // 2 + 1))).isoformat()};"
            f"{kwh if kwh is not None else f'1.25{i}'}"
            for i in range(n)]


def scada_name(site: str = "ERF", hour: datetime = HOUR) -> str:
    return f"SCADA_TAGS_{site}_{hour:%Y%m%dT%H}00Z.csv"


def scada_lines(n: int = 100, machine: str = "ERF-L1-M01") -> list[str]:
    return [f"2026-10-20T05:{i // 60:02d}:{i % 60:02d}Z;{machine};counter;{100 + i};GOOD"
            for i in range(n)]


def wms_name(site: str = "ERF", hour: datetime = HOUR) -> str:
    return f"WMS_MOVEMENTS_{site}_{hour:%Y%m%dT%H}00Z.csv"


def wms_lines(n: int = 2, prefix: str = "M") -> list[str]:
    texts = ["黑色色母粒", "铝铸件毛坯", "齿轮箱", "螺栓"]
    return [f"{prefix}{i};RECEIPT;2026-10-20 07:{i:02d}:00;ERF;20001{i};{texts[i % 4]};L{i};"
            f"{i + 1}.5;kg;DOCK;RM-01;PO{i}" for i in range(n)]


def plm_name(day: datetime = HOUR) -> str:
    return f"PLM_EXPORT_ERF_{day:%Y%m%d}.xml"


def write_plm_export(path: Path, items: int, boms: int, components: int, ecos: int,
                     name_repeat: int = 1) -> dict[str, int]:
    """A PLM export with `items` items, `boms` BOMs of `components` lines and `ecos` ECOs,
    written as it is generated (no tree in memory); returns the records per entity."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<PLMExport site="ERF" '
                 'exportedAt="2026-10-20T05:00:00+02:00" type="full">\n<Items>\n')
        en, zh = "Gear housing " * name_repeat, "齿轮箱壳体" * name_repeat
        fh.writelines(f'<Item number="{100000 + i}" mesItem="ITM-{i}" type="FERT" uom="PCS" '
                      f'revision="A"><Name lang="en">{en}{i}</Name>'
                      f'<Name lang="zh">{zh}{i}</Name></Item>\n' for i in range(items))
        fh.write("</Items>\n<BOMs>\n")
        for b in range(boms):
            fh.write(f'<BOM parent="{100000 + b}" revision="A" effectiveFrom="2026-10-01">')
            fh.writelines(f'<Component number="{200000 + c}" qty="{c + 1}" uom="PCS"/>'
                          for c in range(components))
            fh.write("</BOM>\n")
        fh.write("</BOMs>\n<ECOs>\n")
        fh.writelines(f'<ECO number="ECO-{e:06d}" status="released" '
                      'releasedAt="2026-10-19T10:00:00+02:00" effectiveFrom="2026-10-20">'
                      f'<Affected item="{100000 + e}" fromRevision="A" toRevision="B"/>'
                      f'<Description lang="en">Change {e}</Description></ECO>\n'
                      for e in range(ecos))
        fh.write("</ECOs>\n</PLMExport>\n")
    return {"items": items, "bom_lines": boms * components, "ecos": ecos}


# --- warehouse ---------------------------------------------------------------------------------

def reset(dsn: str, slug: str) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute(f"drop schema if exists raw_{slug} cascade")
        for table in ("quarantine", "load_audit", "schema_drift", "source_incident",
                      "extract_watermark"):
            conn.execute(f"delete from ops.{table} where system = %s", (slug,))


def scalar(dsn: str, sql: str, *params):
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchone()[0]


def rows(dsn: str, sql: str, *params) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def raw_count(dsn: str, slug: str, entity: str, source: str | None = None) -> int:
    if source is None:
        return scalar(dsn, f"select count(*) from raw_{slug}.{entity}")
    return scalar(dsn, f"select count(*) from raw_{slug}.{entity} where _source = %s", source)


def quarantine_count(dsn: str, slug: str, entity: str | None = None) -> int:
    return scalar(dsn, "select count(*) from ops.quarantine where system = %s "
                       "and (%s::text is null or entity = %s)", slug, entity, entity)


def incidents(dsn: str, slug: str, kind: str | None = None, open_only: bool = False
              ) -> list[tuple]:
    """(entity, kind, subject, reason, resolved) of the source's incidents."""
    return rows(dsn, "select entity, kind, subject, reason, resolved_at is not null "
                     "from ops.source_incident where system = %s "
                     "and (%s::text is null or kind = %s) and (not %s or resolved_at is null) "
                     "order by incident_id", slug, kind, kind, open_only)


def everything_stored(dsn: str, slug: str) -> str:
    """Every row of the source's raw tables, quarantine, incidents and audit, as text."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        parts = []
        for (table,) in conn.execute(
                "select format('%%I.%%I', table_schema, table_name) from information_schema.tables "
                "where table_schema = %s", (f"raw_{slug}",)):
            parts.append(str(conn.execute(f"select * from {table}").fetchall()))
        for table in ("quarantine", "source_incident", "load_audit"):
            parts.append(str(conn.execute(f"select * from ops.{table} where system = %s",
                                          (slug,)).fetchall()))
    return "\n".join(parts)


# --- child process for the memory tests --------------------------------------------------------

def _child(mode: str, args: dict) -> dict:
    import resource

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include"))
    out: dict = {"results": {}}
    started = time.perf_counter()
    if mode == "csv":
        for system, entity in (("ems", "meter_readings"), ("scada", "tag_values")):
            source = private_source(system)
            result, _ = run_entity(args["dsn"], source, entity)
            out["results"][system] = dataclasses.asdict(result)
    elif mode == "plm":
        from factory_platform.extract import plm_xml

        parse_into = plm_xml._parse_into
        calls = []

        def counted(*a, **k):
            calls.append(a[1])
            return parse_into(*a, **k)

        plm_xml._parse_into = counted
        source = private_source("plm")
        for entity in ("items", "bom_lines", "ecos"):
            result, _ = run_entity(args["dsn"], source, entity, start=HOUR.replace(hour=6),
                                   length=timedelta(days=1))
            out["results"][entity] = dataclasses.asdict(result)
            out.setdefault("per_entity_s", []).append(time.perf_counter() - started)
        out["parses"] = calls
    else:
        raise SystemExit(f"unknown mode {mode}")
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(mode: str, args: dict, env: dict[str, str]) -> dict:
    """Run this module as a child process; returns what it printed (its results, its own
    peak RSS in MB and the seconds its loads took)."""
    import subprocess

    completed = subprocess.run(
        [sys.executable, __file__, mode, json.dumps(args)], env={**os.environ, **env},
        capture_output=True, text=True, timeout=120, check=False)
    if completed.returncode:
        raise AssertionError(f"child {mode} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include"))
    print(json.dumps(_child(sys.argv[1], json.loads(sys.argv[2]))))
