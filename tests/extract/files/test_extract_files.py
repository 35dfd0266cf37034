"""WMS, SCADA, EMS and PLM file drops into raw_*: after every interval of the 14-day world has
been extracted, the raw tables hold exactly what the plant emitted (minus the quarantined
records, each with a reason), the load audit adds up, and extracting everything again — or
re-running a week — changes nothing."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest

from .conftest import (
    SYSTEMS,
    emitted_files,
    extract_systems,
    raw_fingerprint,
    rows,
    scalar,
    world_intervals,
)


def read_delimited(path, encoding: str = "utf-8") -> list[dict]:
    """A delivered file's records as the plant wrote them (`;`, header, CRLF or LF)."""
    lines = path.read_bytes().decode(encoding).splitlines()
    header = lines[0].split(";")
    return [dict(zip(header, line.split(";"))) for line in lines[1:]]


def is_whole(path) -> bool:
    return path.read_bytes().endswith(b"\n")


def injected(dsn: str, kind: str) -> list[tuple]:
    return rows(dsn, "select record_id, file_name, action from truth.injected_defects "
                     "where kind = %s order by defect_id", kind)


def test_wms_movements_land_once_with_chinese_texts_intact(plant, files_loaded, warehouse_dsn):
    files = emitted_files(plant, "wms", "movements")
    resend = [f for f in files if f.name.endswith("_RESEND.csv")]
    assert {f.name for f in resend} == {name for _, name, _ in
                                         injected(warehouse_dsn, "wms_duplicate_file")}
    emitted = {r["movement_id"]: r for f in files if f not in resend
               for r in read_delimited(f, "gb18030")}
    raw = {r[0]: r[1:] for r in rows(
        warehouse_dsn, "select movement_id, material_desc, qty, material, event_time::text, "
                       "_source from raw_wms.movements")}
    assert set(raw) == set(emitted)
    assert scalar(warehouse_dsn, "select count(*) from ops.quarantine where system = 'wms'") == 0
    for movement_id, (desc, qty, material, event_time, source) in raw.items():
        record = emitted[movement_id]
        assert (desc, qty, material, event_time) == (
            record["material_desc"], Decimal(record["qty"]), record["material"],
            record["event_time"]), movement_id
        assert not source.endswith("_RESEND.csv")
    assert any("\u4e00" <= ch <= "\u9fff" for desc, *_ in raw.values() for ch in desc or "")
    assert raw[next(iter(raw))][0] == emitted[next(iter(raw))]["material_desc"]
    # each _RESEND copy is loaded zero times: its rows are counted as duplicates, it is archived
    resend_lines = sum(len(read_delimited(f, "gb18030")) for f in resend)
    assert scalar(warehouse_dsn, "select sum(duplicates_skipped) from ops.load_audit "
                                 "where system = 'wms' and entity = 'movements'") == resend_lines
    for f in resend:
        assert (plant.inbox / "wms" / "archive" / f.name).exists()


def test_wms_cycle_counts(plant, files_loaded, warehouse_dsn):
    emitted = [r for f in emitted_files(plant, "wms", "cycle_counts")
               for r in read_delimited(f, "gb18030")]
    raw = {r[0]: r[1:] for r in rows(warehouse_dsn, "select count_id, material_desc, "
                                     "book_qty, counted_qty, count_date::text "
                                     "from raw_wms.cycle_counts")}
    assert len(raw) == len(emitted)
    for record in emitted:
        assert raw[record["count_id"]] == (record["material_desc"], Decimal(record["book_qty"]),
                                           Decimal(record["counted_qty"]), record["count_date"])


def test_scada_tag_values_equal_the_historian_files(plant, files_loaded, warehouse_dsn):
    count = 0
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for f in emitted_files(plant, "scada", "tag_values"):
        for line in f.read_text(encoding="utf-8").splitlines()[1:]:
            _ts, _machine, tag, value, _quality = line.split(";")
            sums[tag] += Decimal(value)
            count += 1
    raw = dict(rows(warehouse_dsn, "select tag, sum(value) from raw_scada.tag_values group by tag"))
    assert scalar(warehouse_dsn, "select count(*) from raw_scada.tag_values") == count > 1_000_000
    assert raw == dict(sums)
    assert raw["counter"] == sums["counter"] > 0
    # injected spikes are flagged downstream, never dropped here: each one is in raw
    for record_id, _, _ in injected(warehouse_dsn, "scada_spike"):
        machine, tag, ts = record_id.split("|")
        assert scalar(warehouse_dsn, "select count(*) from raw_scada.tag_values where "
                      "machine_code = %s and tag = %s and ts = %s::timestamptz",
                      machine, tag, ts) == 1
    assert scalar(warehouse_dsn, "select count(*) from ops.quarantine where system = 'scada'") == 0


def test_scada_alarms(plant, files_loaded, warehouse_dsn):
    emitted = [r for f in emitted_files(plant, "scada", "alarms") for r in read_delimited(f)]
    raw = rows(warehouse_dsn, "select machine_code, alarm_code, text_zh, raised_at "
                              "from raw_scada.alarms")
    assert len(raw) == len(emitted) > 0
    assert Counter(r[2] for r in raw) == Counter(r["text_zh"] for r in emitted)


def test_ems_kwh_equal_the_files_minus_the_malformed_ones(plant, files_loaded, warehouse_dsn):
    files = emitted_files(plant, "ems")
    malformed = {f.name for f in files if not is_whole(f)}
    assert malformed == {name for _, name, _ in injected(warehouse_dsn, "ems_malformed_file")}
    per_machine: dict[str, Decimal] = defaultdict(Decimal)
    for f in files:
        if f.name not in malformed:
            for r in read_delimited(f):
                per_machine[r["machine_code"]] += Decimal(r["kwh"])
    raw = dict(rows(warehouse_dsn, "select machine_code, sum(kwh) from raw_ems.meter_readings "
                                   "group by machine_code"))
    assert raw == dict(per_machine)
    truth = dict(rows(warehouse_dsn, "select machine_code, sum(energy_kwh) "
                                     "from truth.energy_machine_day group by machine_code"))
    assert {m: round(v, 3) for m, v in raw.items()} == {m: round(Decimal(v), 3)
                                                        for m, v in truth.items()}
    # the malformed files: in quarantine/ with a reason, every line in ops.quarantine
    quarantined = rows(warehouse_dsn, "select source, count(*), min(reason) from ops.quarantine "
                                      "where system = 'ems' group by source")
    assert {name for name, _, _ in quarantined} == malformed
    for name, lines, reason in quarantined:
        delivered = plant.world / "drops" / "ems" / name
        assert lines == len(delivered.read_bytes().splitlines()) - 1
        assert "cut off" in reason
        assert (plant.inbox / "ems" / "quarantine" / name).read_bytes() == delivered.read_bytes()
        assert "cut off" in (plant.inbox / "ems" / "quarantine" / f"{name}.reason.txt").read_text()
        assert scalar(warehouse_dsn, "select count(*) from raw_ems.meter_readings "
                                     "where _source = %s", name) == 0


def test_plm_items_boms_and_ecos(plant, files_loaded, warehouse_dsn):
    expected = Counter()
    names_zh = {}
    for f in emitted_files(plant, "plm"):
        root = ET.parse(f).getroot()
        expected["items"] += len(root.findall("Items/Item"))
        expected["bom_lines"] += len(root.findall("BOMs/BOM/Component"))
        expected["ecos"] += len(root.findall("ECOs/ECO"))
        for item in root.findall("Items/Item"):
            names_zh[item.get("number")] = item.find("Name[@lang='zh']").text
    for entity, count in expected.items():
        assert scalar(warehouse_dsn, f"select count(*) from raw_plm.{entity}") == count > 0
    assert dict(rows(warehouse_dsn, "select number, name_zh from raw_plm.items")) == names_zh
    eco = rows(warehouse_dsn, "select eco_number, affected, description_zh from raw_plm.ecos "
                              "order by eco_number")[0]
    assert eco[1][0]["toRevision"] == "B" and eco[2]
    # a file moves to the archive once all three entities loaded it
    assert sorted(p.name for p in (plant.inbox / "plm" / "archive").glob("*.xml")) == sorted(
        f.name for f in emitted_files(plant, "plm"))


@pytest.mark.parametrize("system", SYSTEMS)
def test_load_audit_adds_up(system, files_loaded, warehouse_dsn):
    audit = rows(warehouse_dsn, "select entity, rows_read, rows_loaded, rows_quarantined, "
                                "duplicates_skipped, status from ops.load_audit where system = %s",
                 system)
    assert audit
    for entity, read, loaded, quarantined, duplicates, status in audit:
        assert status == "loaded"
        assert read == loaded + quarantined + duplicates, entity
    # every file is loaded by exactly one batch: the batches' sums are the tables' contents
    for entity, loaded, quarantined in rows(
            warehouse_dsn, "select entity, sum(rows_loaded), sum(rows_quarantined) "
                           "from ops.load_audit where system = %s group by entity", system):
        assert scalar(warehouse_dsn, f"select count(*) from raw_{system}.{entity}") == loaded
        assert scalar(warehouse_dsn, "select count(*) from ops.quarantine where system = %s "
                                     "and entity = %s", system, entity) == quarantined


def test_every_delivered_file_is_settled(plant, files_loaded):
    for system in SYSTEMS:
        waiting = [p.name for p in (plant.inbox / system).iterdir() if p.is_file()
                   and not p.name.startswith(".")]
        assert waiting == [], system
        settled = {p.name for folder in ("archive", "quarantine")
                   for p in (plant.inbox / system / folder).glob("*") if ".reason" not in p.name}
        assert settled == {f.name for f in emitted_files(plant, system)}


@pytest.mark.slow  # every file drop extracted again end to end (make test runs it)
def test_extracting_everything_again_changes_nothing(plant, files_loaded, warehouse_dsn):
    print("\nsecond extraction (s):", extract_systems(plant, warehouse_dsn))
    for system in SYSTEMS:
        assert raw_fingerprint(warehouse_dsn, system) == files_loaded[system], system


@pytest.mark.slow  # every file drop extracted again end to end (make test runs it)
def test_rerunning_a_week_from_the_archive_changes_nothing(plant, files_loaded, warehouse_dsn):
    week_start = plant.start + timedelta(days=3)
    week = (week_start, week_start + timedelta(days=7))

    def week_of(system):
        return [(s, e) for s, e in world_intervals(plant, system) if week[0] <= s < week[1]]

    assert all(not any((plant.inbox / s).glob("*.*")) for s in ("wms", "scada", "ems"))
    print("\nweek re-run (s):", extract_systems(plant, warehouse_dsn, week_of))
    for system in SYSTEMS:
        assert raw_fingerprint(warehouse_dsn, system) == files_loaded[system], system
