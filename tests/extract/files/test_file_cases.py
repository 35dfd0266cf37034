"""Bad deliveries end as designed: a cut-off file is quarantined whole, a file delivered twice
loads once, a missing required column fails naming system, file and column, a new column is
kept, bad historian lines are quarantined with their line numbers while the rest loads, and a
PLM export cannot make the parser resolve entities.

Each case runs the real client and loader against its own inbox folder (a temporary `fs`
connection) and its own `raw_<slug>` schema, so it never touches the shared plant's tables."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest
from factory_platform.extract.clients import Window, client_for
from factory_platform.extract.files import MissingColumnError
from factory_platform.extract.load import load_batch
from factory_platform.extract.run import load_target
from factory_platform.sources import get_source

from .conftest import reset, rows, scalar

HOUR = datetime(2026, 10, 20, 5, tzinfo=UTC)
EMS_HEADER = "meter_id;machine_code;interval_start;interval_end;kwh"
SCADA_HEADER = "ts;machine_code;tag;value;quality"


def ems_lines(n: int = 8) -> list[str]:
    local = timezone(timedelta(hours=2))
    start = datetime(2026, 10, 20, 7, tzinfo=local)
    return [f"EM-M{i % 2};M{i % 2};{(start + timedelta(minutes=15 * (i // 2))).isoformat()};"
            f"{(start + timedelta(minutes=15 * (i // 2 + 1))).isoformat()};1.25{i}"
            for i in range(n)]


def scada_lines(n: int = 100) -> list[str]:
    return [f"2026-10-20T05:{i // 60:02d}:{i % 60:02d}Z;ERF-L1-M01;counter;{100 + i};GOOD"
            for i in range(n)]


@pytest.fixture
def case(tmp_path, warehouse_dsn, monkeypatch):
    """Run one interval of a copy of a registry source, pointed at a temporary inbox."""
    from factory_platform.warehouse import ensure_warehouse_once

    ensure_warehouse_once(warehouse_dsn)

    def run(system: str, entity: str, files: dict[str, bytes] | None = None,
            start: datetime = HOUR, length: timedelta = timedelta(hours=1)) -> dict:
        slug = f"{system}_case"
        inbox = tmp_path / slug
        inbox.mkdir(exist_ok=True)
        for name, body in (files or {}).items():
            (inbox / name).write_bytes(body)
            settled = time.time() - 3600  # delivered an hour ago: past the settle time
            os.utime(inbox / name, (settled, settled))
        monkeypatch.setenv(f"AIRFLOW_CONN_{slug.upper()}_DROPS", json.dumps(
            {"conn_type": "fs", "extra": {"path": str(inbox)}}))
        source = dataclasses.replace(get_source(system), system=slug, conn_id=f"{slug}_drops")
        window = Window(start - source.lookback, start + length, start, start + length)
        extraction = client_for(source.interface).open_extraction(
            source, source.entity(entity), window)
        result = load_batch(warehouse_dsn, load_target(source, source.entity(entity)),
                            extraction, interval_start=window.interval_start,
                            interval_end=window.interval_end, window_start=window.start)
        return asdict(result)

    run.inbox = lambda system: tmp_path / f"{system}_case"
    for system in ("ems", "scada", "plm", "wms"):
        reset(warehouse_dsn, f"{system}_case")
    yield run
    for system in ("ems", "scada", "plm", "wms"):
        reset(warehouse_dsn, f"{system}_case")


def body(header: str, lines: list[str], end: str = "\n") -> bytes:
    return (end.join([header, *lines]) + end).encode()


def test_cut_off_file_is_quarantined_whole_and_stays_so(case, warehouse_dsn):
    good = body(EMS_HEADER, ems_lines())
    cut = body(EMS_HEADER, ems_lines())[:-20]
    files = {"EMS_READINGS_ERF_20261020T0500Z.csv": good,
             "EMS_READINGS_ERG_20261020T0500Z.csv": cut}
    for attempt in range(2):  # the re-run finds the files in archive/ and quarantine/
        result = case("ems", "meter_readings", files if attempt == 0 else None)
        assert (result["rows_read"], result["rows_loaded"], result["rows_quarantined"]) == (16, 8, 8)
    inbox = case.inbox("ems")
    assert (inbox / "quarantine" / "EMS_READINGS_ERG_20261020T0500Z.csv").read_bytes() == cut
    assert "cut off mid-row: line 9" in (
        inbox / "quarantine" / "EMS_READINGS_ERG_20261020T0500Z.csv.reason.txt").read_text()
    assert (inbox / "archive" / "EMS_READINGS_ERF_20261020T0500Z.csv").exists()
    quarantined = rows(warehouse_dsn, "select source, record_ref, reason, raw_payload "
                                      "from ops.quarantine where system = 'ems_case' "
                                      "order by quarantine_id")
    assert [r[1] for r in quarantined] == [f"line {n}" for n in range(2, 10)]
    assert quarantined[-1][3] == cut.decode().splitlines()[-1]
    assert scalar(warehouse_dsn, "select sum(kwh) from raw_ems_case.meter_readings") == sum(
        Decimal(line.split(";")[-1]) for line in ems_lines())


def test_file_delivered_twice_loads_once(case, warehouse_dsn):
    movements = ("movement_id;movement_type;event_time;site;material;material_desc;lot;qty;"
                 "unit;from_loc;to_loc;reference\r\n"
                 "M1;RECEIPT;2026-10-20 07:03:00;ERF;200022;黑色色母粒;L1;10;kg;DOCK;RM-01;PO1\r\n"
                 "M2;ISSUE;2026-10-20 07:09:00;ERF;200011;铝铸件毛坯;L2;1.5;kg;RM-01;LINE;WO1\r\n"
                 ).encode("gb18030")
    files = {"WMS_MOVEMENTS_ERF_20261020T0500Z.csv": movements,
             "WMS_MOVEMENTS_ERF_20261020T0500Z_RESEND.csv": movements}
    for attempt in range(2):
        result = case("wms", "movements", files if attempt == 0 else None)
        assert (result["rows_read"], result["rows_loaded"], result["duplicates_skipped"]) == (4, 2, 2)
    assert rows(warehouse_dsn, "select movement_id, material_desc, _source "
                               "from raw_wms_case.movements order by 1") == [
        ("M1", "黑色色母粒", "WMS_MOVEMENTS_ERF_20261020T0500Z.csv"),
        ("M2", "铝铸件毛坯", "WMS_MOVEMENTS_ERF_20261020T0500Z.csv")]
    assert sorted(p.name for p in (case.inbox("wms") / "archive").iterdir()) == sorted(files)


def test_files_shorter_than_an_hour_load_by_their_minute(case, warehouse_dsn):
    """A WMS exporter set to a file every 2 minutes names each after its first minute: a run
    over 05:00-05:04 loads the files of 05:00 and 05:02, not the one of 05:04 (the next run's)."""
    header = ("movement_id;movement_type;event_time;site;material;material_desc;lot;qty;"
              "unit;from_loc;to_loc;reference\r\n")
    files = {f"WMS_MOVEMENTS_ERF_20261020T05{minute:02d}Z.csv": (
        header + f"M{minute};RECEIPT;2026-10-20 07:{minute:02d}:30;ERF;200022;黑色色母粒;L1;10;"
                 f"kg;DOCK;RM-01;PO1\r\n").encode("gb18030") for minute in (0, 2, 4)}
    result = case("wms", "movements", files, length=timedelta(minutes=4))
    assert (result["rows_read"], result["rows_loaded"]) == (2, 2)
    assert rows(warehouse_dsn, "select movement_id, _source from raw_wms_case.movements "
                               "order by 1") == [
        ("M0", "WMS_MOVEMENTS_ERF_20261020T0500Z.csv"),
        ("M2", "WMS_MOVEMENTS_ERF_20261020T0502Z.csv")]


def test_missing_required_column_fails_naming_system_file_and_column(case):
    header = "meter_id;machine_code;interval_start;interval_end"
    lines = [line.rsplit(";", 1)[0] for line in ems_lines()]
    with pytest.raises(MissingColumnError) as failure:
        case("ems", "meter_readings", {"EMS_READINGS_ERF_20261020T0500Z.csv": body(header, lines)})
    message = str(failure.value)
    assert "ems_case" in message and "EMS_READINGS_ERF_20261020T0500Z.csv" in message
    assert "'kwh'" in message
    assert (case.inbox("ems") / "EMS_READINGS_ERF_20261020T0500Z.csv").exists()  # left in place


@pytest.mark.parametrize("system, entity, header, lines", [
    ("ems", "meter_readings", EMS_HEADER, ems_lines()),
    ("scada", "tag_values", SCADA_HEADER, scada_lines()),  # fast path falls back for _extra
])
def test_new_column_is_kept_and_recorded(case, warehouse_dsn, system, entity, header, lines):
    stamp = "EMS_READINGS" if system == "ems" else "SCADA_TAGS"
    result = case(system, entity, {f"{stamp}_ERF_20261020T0500Z.csv":
                                   body(header + ";voltage", [f"{x};230" for x in lines])})
    assert result["rows_loaded"] == len(lines) and result["new_columns"] == ["voltage"]
    assert scalar(warehouse_dsn, f"select count(*) from raw_{system}_case.{entity} "
                                 "where _extra->>'voltage' = '230'") == len(lines)
    assert scalar(warehouse_dsn, "select column_name from ops.schema_drift "
                                 "where system = %s", f"{system}_case") == "voltage"


def test_historian_bad_lines_are_quarantined_with_line_numbers(case, warehouse_dsn):
    lines = scada_lines()
    lines[3] = lines[3].replace(";103;", ";12,5;")  # line 5: not a number
    lines[7] = lines[7].rsplit(";", 1)[0]  # line 9: a field short
    lines[10] = lines[10].replace("ERF-L1-M01", "")  # line 12: required field empty
    good = [line.replace("ERF-L1-M01", "ERG-L1-M01") for line in scada_lines()]
    result = case("scada", "tag_values", {  # the batch's single COPY fails: file by file
        "SCADA_TAGS_ERF_20261020T0500Z.csv": body(SCADA_HEADER, lines),
        "SCADA_TAGS_ERG_20261020T0500Z.csv": body(SCADA_HEADER, good)})
    assert (result["rows_read"], result["rows_loaded"], result["rows_quarantined"]) == (200, 197, 3)
    quarantined = rows(warehouse_dsn, "select record_ref, reason from ops.quarantine "
                                      "where system = 'scada_case' order by quarantine_id")
    assert [ref for ref, _ in quarantined] == ["line 5", "line 12", "line 9"]
    assert "value" in quarantined[0][1] and "machine_code" in quarantined[1][1]
    assert "4 fields" in quarantined[2][1]
    assert scalar(warehouse_dsn, "select sum(value) from raw_scada_case.tag_values where "
                                 "machine_code = 'ERF-L1-M01'") == sum(
        100 + i for i in range(100) if i not in (3, 7, 10))
    assert scalar(warehouse_dsn, "select sum(rows_loaded) from raw_scada_case.tag_values__files "
                                 "where source like 'SCADA_TAGS_ERG%%'") == 100


def test_historian_fast_path_keeps_every_byte(case, warehouse_dsn):
    lines = scada_lines()
    lines[0] = lines[0].replace("GOOD", r"GOOD\tC:\temp")  # text-format COPY would unescape it
    result = case("scada", "tag_values", {"SCADA_TAGS_ERF_20261020T0500Z.csv":
                                          body(SCADA_HEADER, lines, end="\r\n")})
    assert result["rows_loaded"] == 100 and result["rows_quarantined"] == 0
    assert scalar(warehouse_dsn, "select quality from raw_scada_case.tag_values "
                                 "where value = 100") == r"GOOD\tC:\temp"
    assert scalar(warehouse_dsn, "select count(*) from raw_scada_case.tag_values "
                                 "where quality = 'GOOD'") == 99  # no stray \r from CRLF


def test_plm_parser_resolves_no_entities(case, warehouse_dsn, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    hostile = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE PLMExport [<!ENTITY xxe SYSTEM "file://{secret}"><!ENTITY lol "lollollol">]>
<PLMExport site="ERF" exportedAt="2026-10-20T05:00:00+02:00" type="full">
  <Items><Item number="100045" mesItem="ITM-A-045" type="FERT" uom="PCS" revision="A">
    <Name lang="en">&xxe;</Name><Name lang="zh">&lol;齿轮箱</Name></Item></Items>
</PLMExport>
""".encode()
    broken = b'<?xml version="1.0"?><PLMExport site="ERF"><Items><Item number="1"></PLMExport>'
    result = case("plm", "items", {"PLM_EXPORT_ERF_20261020.xml": hostile,
                                   "PLM_EXPORT_ERF_20261019.xml": broken},
                  start=datetime(2026, 10, 19, 6, tzinfo=UTC), length=timedelta(days=1))
    assert (result["rows_loaded"], result["rows_quarantined"]) == (1, 1)
    with psycopg.connect(warehouse_dsn) as conn:
        dumped = str(conn.execute("select row_to_json(i) from raw_plm_case.items i").fetchall())
    assert "TOP-SECRET" not in dumped and "lollollol" not in dumped
    assert "齿轮箱" in dumped
    reason = scalar(warehouse_dsn, "select reason from ops.quarantine where system = 'plm_case'")
    assert "not a readable PLM export" in reason
    # another entity still has to read the files: they wait in the inbox, marked for items
    assert (case.inbox("plm") / ".loaded" / "items" / "PLM_EXPORT_ERF_20261020.xml").exists()
    assert (case.inbox("plm") / "PLM_EXPORT_ERF_20261020.xml").exists()
