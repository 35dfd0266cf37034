"""Issue #11 "Nothing lost", item 2 (files): every record a plant delivers is loaded or
quarantined, and nothing outside the inbox is read.

Each fault runs the real file client (`files` / `plm_xml`) and loader against its own inbox in
tmp_path and its own `raw_ff<system>` schema (private copies of the registry sources), and
counts: records delivered = raw rows + quarantined rows, with the exact numbers. Settle time
is exercised with file mtimes (`os.utime`), never with sleeps. The two memory tests load in a
child process (`_file_helpers.py`) and compare its peak RSS with a child that loads tiny files.
"""

from __future__ import annotations

import logging
import os
import stat
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from factory_platform.extract import plm_xml
from factory_platform.extract.files import UnsafeInboxError

from ._file_helpers import (
    EMS_HEADER,
    HOUR,
    SCADA_HEADER,
    WMS_HEADER,
    age,
    body,
    conn_env,
    deliver,
    ems_lines,
    ems_name,
    everything_stored,
    incidents,
    plm_name,
    private_source,
    quarantine_count,
    raw_count,
    reset,
    rows,
    run_child,
    run_entity,
    scada_lines,
    scada_name,
    scalar,
    slug_of,
    window_of,
    wms_lines,
    wms_name,
    write_plm_export,
)

SYSTEMS = ("ems", "scada", "wms", "plm")
SECRET = "TOP-SECRET-pw-4711"
PLM_DAY = HOUR.replace(hour=6)


@pytest.fixture
def drops(tmp_path, warehouse_dsn, monkeypatch):
    """`drops.inbox(system)`: a private inbox (connection in the environment);
    `drops.run(system, entity, **source_changes)`: one interval through client and loader."""
    from factory_platform.warehouse import ensure_warehouse_once

    ensure_warehouse_once(warehouse_dsn)

    class Drops:
        dsn = warehouse_dsn

        @staticmethod
        def inbox(system: str):
            path = tmp_path / slug_of(system)
            path.mkdir(exist_ok=True)
            monkeypatch.setenv(*conn_env(slug_of(system), path))
            return path

        @staticmethod
        def run(system: str, entity: str, start: datetime = HOUR,
                length: timedelta = timedelta(hours=1), **changes):
            Drops.inbox(system)
            return run_entity(warehouse_dsn, private_source(system, **changes), entity, start,
                              length)

    for system in SYSTEMS:
        reset(warehouse_dsn, slug_of(system))
    yield Drops
    for system in SYSTEMS:
        reset(warehouse_dsn, slug_of(system))


def names_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def plm_run_all(drops, **changes) -> dict[str, object]:
    return {entity: drops.run("plm", entity, start=PLM_DAY, length=timedelta(days=1), **changes)[0]
            for entity in ("items", "bom_lines", "ecos")}


# --- 1. never follow a link, never read outside the inbox ------------------------------------


def test_links_to_a_secret_outside_the_inbox_are_never_read(drops, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secret = tmp_path / "outside" / "credentials.csv"
    secret.parent.mkdir()
    secret.write_text(f"{EMS_HEADER}\nEM-X;X;2026-10-20T07:00:00+02:00;"
                      f"2026-10-20T07:15:00+02:00;{SECRET}\n")
    inbox = drops.inbox("ems")
    deliver(inbox, ems_name("ERG"), body(EMS_HEADER, ems_lines(8, machine="G")))
    (inbox / ems_name("ERF")).symlink_to(secret)  # a symbolic link named like a data file
    os.link(secret, inbox / ems_name("ERH"))  # a hard link: a second name of the secret
    age(inbox / ems_name("ERF"))
    age(inbox / ems_name("ERH"))
    (inbox / "quarantine").mkdir()
    (inbox / "quarantine" / f"{ems_name('ERF')}.reason.txt").symlink_to(secret)  # a trap

    result, _ = drops.run("ems", "meter_readings")

    slug = slug_of("ems")
    delivered = 8 + 1 + 1  # the good file's records; one quarantine row naming each link
    assert (result.rows_loaded, result.rows_quarantined) == (8, 2)
    assert raw_count(drops.dsn, slug, "meter_readings") + quarantine_count(drops.dsn, slug) \
        == delivered
    quarantined = dict(rows(drops.dsn, "select source, raw_payload from ops.quarantine "
                                       "where system = %s", slug))
    assert quarantined == {ems_name("ERF"): None, ems_name("ERH"): None}  # no payload at all
    reasons = {subject: reason for _, kind, subject, reason, _ in incidents(drops.dsn, slug)
               if kind == "file_set_aside"}
    assert "symbolic link" in reasons[ems_name("ERF")]
    assert "2 hard links" in reasons[ems_name("ERH")]
    assert SECRET not in everything_stored(drops.dsn, slug)
    assert SECRET not in caplog.text
    # the links themselves moved to quarantine/, their target untouched; the planted link
    # under the reason file's name was replaced, not written through
    moved = inbox / "quarantine" / ems_name("ERF")
    assert moved.is_symlink() and os.readlink(moved) == str(secret)
    assert SECRET in secret.read_text()
    reason_file = inbox / "quarantine" / f"{ems_name('ERF')}.reason.txt"
    assert not reason_file.is_symlink() and "symbolic link" in reason_file.read_text()
    assert (inbox / "quarantine" / ems_name("ERH")).exists()
    assert names_in(inbox / "archive") == [ems_name("ERG")]
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []


def test_an_archive_folder_that_is_a_link_stops_the_run_before_anything_moves(drops, tmp_path):
    inbox = drops.inbox("ems")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (inbox / "archive").symlink_to(elsewhere)
    deliver(inbox, ems_name("ERF"), body(EMS_HEADER, ems_lines(8)))
    with pytest.raises(UnsafeInboxError, match="archive is a symbolic link"):
        drops.run("ems", "meter_readings")
    assert list(elsewhere.iterdir()) == [] and (inbox / ems_name("ERF")).exists()


def test_fifo_device_and_directory_named_like_data_files_are_set_aside(drops):
    inbox = drops.inbox("ems")
    deliver(inbox, ems_name("ERG"), body(EMS_HEADER, ems_lines(8, machine="G")))
    os.mkfifo(inbox / ems_name("ERF"))  # opening it for reading would block
    (inbox / ems_name("ERH")).mkdir()
    (inbox / ems_name("ERH") / "inner.csv").write_text("x\n")
    specials = [ems_name("ERF"), ems_name("ERH")]
    try:
        os.mknod(inbox / ems_name("ERI"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        specials.append(ems_name("ERI"))
    except PermissionError:
        pass  # no CAP_MKNOD here: FIFO and directory only
    for name in specials:
        age(inbox / name)

    result, _ = drops.run("ems", "meter_readings")

    slug = slug_of("ems")
    assert (result.rows_loaded, result.rows_quarantined) == (8, len(specials))
    assert raw_count(drops.dsn, slug, "meter_readings") + quarantine_count(drops.dsn, slug) \
        == 8 + len(specials)
    assert sorted(subject for _, _, subject, _, _ in incidents(drops.dsn, slug, "file_set_aside")) \
        == sorted(specials)
    assert set(specials) <= set(names_in(inbox / "quarantine"))
    assert stat.S_ISFIFO(os.lstat(inbox / "quarantine" / ems_name("ERF")).st_mode)
    assert (inbox / "quarantine" / ems_name("ERH") / "inner.csv").exists()
    assert names_in(inbox / "archive") == [ems_name("ERG")]


# --- 2. only stable files ----------------------------------------------------------------------


def test_a_growing_file_waits_then_loads_whole(drops):
    inbox = drops.inbox("ems")
    slug = slug_of("ems")
    path = deliver(inbox, ems_name("ERF"), body(EMS_HEADER, ems_lines(8)[:4]), age_s=None)

    result, _ = drops.run("ems", "meter_readings")  # written a moment ago: it waits
    assert (result.rows_read, raw_count(drops.dsn, slug, "meter_readings")) == (0, 0)
    waiting = incidents(drops.dsn, slug, "file_waiting", open_only=True)
    assert [(subject, "still being written" in reason) for _, _, subject, reason, _ in waiting] \
        == [(ems_name("ERF"), True)]
    assert path.exists() and names_in(inbox / "archive") == []

    with open(path, "a") as fh:  # the plant finishes writing it
        fh.write("\n".join(ems_lines(8)[4:]) + "\n")
    age(path, 60)
    result, _ = drops.run("ems", "meter_readings")
    assert (result.rows_loaded, raw_count(drops.dsn, slug, "meter_readings")) == (8, 8)
    assert quarantine_count(drops.dsn, slug) == 0
    assert names_in(inbox / "archive") == [ems_name("ERF")]
    assert incidents(drops.dsn, slug, "file_waiting", open_only=True) == []  # cleared

    # with a completion marker a file is taken at once; without, it still waits
    deliver(inbox, ems_name("ERG"), body(EMS_HEADER, ems_lines(8, machine="G")), age_s=None)
    deliver(inbox, ems_name("ERG") + ".done", b"", age_s=None)
    deliver(inbox, ems_name("ERH"), body(EMS_HEADER, ems_lines(8, machine="H")), age_s=None)
    result, _ = drops.run("ems", "meter_readings", completion_marker="{name}.done")
    assert raw_count(drops.dsn, slug, "meter_readings") == 16
    assert raw_count(drops.dsn, slug, "meter_readings", ems_name("ERH")) == 0
    assert names_in(inbox / "archive") == sorted(
        [ems_name("ERF"), ems_name("ERG"), ems_name("ERG") + ".done"])
    assert [p.name for p in inbox.iterdir() if p.is_file()] == [ems_name("ERH")]


def test_a_file_that_changes_while_read_is_not_archived_and_reloads_whole(drops):
    from factory_platform.extract.clients import client_for
    from factory_platform.extract.load import load_batch
    from factory_platform.extract.run import load_target

    inbox = drops.inbox("ems")
    slug = slug_of("ems")
    path = deliver(inbox, ems_name("ERF"), body(EMS_HEADER, ems_lines(8)))
    source = private_source("ems")
    entity = source.entity("meter_readings")
    window = window_of(source)
    extraction = client_for("csv_drop").open_extraction(source, entity, window)
    with open(path, "a") as fh:  # the plant appends while the batch is being read
        fh.write("\n".join(ems_lines(10)[8:]) + "\n")
    load_batch(drops.dsn, load_target(source, entity), extraction,
               interval_start=window.interval_start, interval_end=window.interval_end,
               window_start=window.start)
    assert path.exists() and names_in(inbox / "archive") == []  # not archived

    result, _ = drops.run("ems", "meter_readings")  # just changed: it waits, rows untouched
    assert result.rows_read == 0 and path.exists()
    age(path, 60)
    result, _ = drops.run("ems", "meter_readings")  # stable: reloaded whole
    assert (raw_count(drops.dsn, slug, "meter_readings"), quarantine_count(drops.dsn, slug)) \
        == (10, 0)
    assert names_in(inbox / "archive") == [ems_name("ERF")]


# --- 3. late and unmatched files ---------------------------------------------------------------


def test_a_file_older_than_the_lookback_is_loaded_into_its_own_period_and_reported(drops):
    inbox = drops.inbox("ems")
    slug = slug_of("ems")
    late_hour = HOUR - timedelta(hours=9)  # lookback is 3 h
    lookback_hour = HOUR - timedelta(hours=2)
    deliver(inbox, ems_name("ERF", late_hour), body(EMS_HEADER, ems_lines(8, machine="L")))
    deliver(inbox, ems_name("ERF", lookback_hour), body(EMS_HEADER, ems_lines(8, machine="B")))
    deliver(inbox, ems_name("ERF"), body(EMS_HEADER, ems_lines(8, machine="O")))

    result, extraction = drops.run("ems", "meter_readings")

    assert extraction.covers_from == late_hour
    assert (result.rows_loaded, raw_count(drops.dsn, slug, "meter_readings")) == (24, 24)
    assert quarantine_count(drops.dsn, slug) == 0
    late = incidents(drops.dsn, slug, "file_late")
    assert [subject for _, _, subject, _, _ in late] == [ems_name("ERF", late_hour)]
    assert "after the lookback" in late[0][3]
    assert scalar(drops.dsn, "select window_start from ops.load_audit where system = %s",
                  slug) == late_hour
    assert len(names_in(inbox / "archive")) == 3


def test_unmatched_files_are_quarantined_and_reported_once(drops):
    inbox = drops.inbox("wms")
    slug = slug_of("wms")
    deliver(inbox, wms_name(), body(WMS_HEADER, wms_lines(2), "\r\n", "gb18030"))
    # a 13th month; a 61st minute (movement files are named after their first minute)
    strays = ["notes.txt", wms_name() + ".bak", "WMS_CYCLECOUNT_ERF_20261399.csv",
              "WMS_MOVEMENTS_ERF_20261020T0661Z.csv"]
    for name in strays:
        deliver(inbox, name, b"anything\n")
    deliver(inbox, ".WMS_MOVEMENTS_ERF_20261020T0600Z.csv.part", b"being written\n")
    deliver(inbox, "fresh.txt", b"just arrived\n", age_s=None)

    drops.run("wms", "movements")
    drops.run("wms", "cycle_counts")  # not the first entity: reports nothing

    unmatched = incidents(drops.dsn, slug, "file_unmatched")
    assert sorted(subject for _, _, subject, _, _ in unmatched) == sorted(strays)
    assert {entity for entity, *_ in unmatched} == {"movements"}
    for stray in ("CYCLECOUNT", "T0661Z"):
        assert "no valid date" in next(r for _, _, s, r, _ in unmatched if stray in s)
    for name in strays:
        assert (inbox / "quarantine" / name).exists()
        assert "quarantine" in (inbox / "quarantine" / f"{name}.reason.txt").read_text()
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [
        ".WMS_MOVEMENTS_ERF_20261020T0600Z.csv.part", "fresh.txt"]
    assert (raw_count(drops.dsn, slug, "movements"), quarantine_count(drops.dsn, slug)) == (2, 0)


# --- 4. re-delivery of a loaded name -----------------------------------------------------------

GOOD = body(EMS_HEADER, ems_lines(8))
BROKEN = {  # kind → (bytes, quarantine rows its broken copy gives, reason fragment)
    "empty": (b"", 0, "empty file"),
    "header only": (EMS_HEADER.encode() + b"\n", 0, "no records"),
    "truncated": (GOOD[:-12], 8, "cut off mid-row"),
    "undecodable": (GOOD.replace(b"EM-M1;M1", b"EM-M1;M\xff", 1), 8, "not valid utf-8"),
}


@pytest.mark.parametrize("kind", [*BROKEN, "link"])
def test_a_broken_redelivery_keeps_the_loaded_rows_and_the_archived_original(
        drops, tmp_path, kind):
    inbox = drops.inbox("ems")
    slug = slug_of("ems")
    name = ems_name()
    deliver(inbox, name, GOOD)
    drops.run("ems", "meter_readings")
    before = rows(drops.dsn, f"select meter_id, kwh from raw_{slug}.meter_readings order by 1, 2")
    assert len(before) == 8

    if kind == "link":
        target = tmp_path / "elsewhere.csv"
        target.write_bytes(GOOD.replace(b"1.25", b"9.99"))
        (inbox / name).symlink_to(target)
        age(inbox / name)
        broken_rows, fragment = 1, "symbolic link"
    else:
        data, broken_rows, fragment = BROKEN[kind]
        deliver(inbox, name, data)
    result, extraction = drops.run("ems", "meter_readings")

    assert name not in extraction.replace_sources
    assert rows(drops.dsn, f"select meter_id, kwh from raw_{slug}.meter_readings "
                           "order by 1, 2") == before
    assert (inbox / "archive" / name).read_bytes() == GOOD
    assert names_in(inbox / "archive") == [name]
    copies = [n for n in names_in(inbox / "quarantine") if not n.endswith(".reason.txt")]
    assert len(copies) == 1 and copies[0].startswith(f"{name}.redelivery-")
    copy = inbox / "quarantine" / copies[0]
    if kind == "link":
        assert copy.is_symlink()
    else:
        assert copy.read_bytes() == BROKEN[kind][0]
    assert fragment in (inbox / "quarantine" / f"{copies[0]}.reason.txt").read_text()
    redelivered = incidents(drops.dsn, slug, "redelivery_set_aside")
    assert [(s, fragment in r) for _, _, s, r, _ in redelivered] == [(name, True)]
    sources = rows(drops.dsn, "select distinct source from ops.quarantine where system = %s",
                   slug)
    assert all(s.startswith(f"{name} (re-delivery ") for (s,) in sources)
    # the broken copy's records: all quarantined (under their own name); the loaded 8 stay
    assert quarantine_count(drops.dsn, slug) == broken_rows
    assert result.rows_loaded == 0

    drops.run("ems", "meter_readings")  # a re-run reads the archived original again
    assert rows(drops.dsn, f"select meter_id, kwh from raw_{slug}.meter_readings "
                           "order by 1, 2") == before
    assert quarantine_count(drops.dsn, slug) == broken_rows


def test_a_broken_plm_redelivery_keeps_every_entity_and_the_archived_original(drops):
    inbox = drops.inbox("plm")
    slug = slug_of("plm")
    path = inbox / plm_name()
    counts = write_plm_export(path, items=6, boms=2, components=3, ecos=2)
    original = path.read_bytes()
    age(path)
    plm_run_all(drops)
    assert {e: raw_count(drops.dsn, slug, e) for e in counts} == counts
    deliver(inbox, plm_name(), original[: len(original) // 2])  # cut off: not well-formed

    plm_run_all(drops)

    assert {e: raw_count(drops.dsn, slug, e) for e in counts} == counts
    assert (inbox / "archive" / plm_name()).read_bytes() == original
    copies = [n for n in names_in(inbox / "quarantine") if not n.endswith(".reason.txt")]
    assert len(copies) == 1 and copies[0].startswith(f"{plm_name()}.redelivery-")
    assert rows(drops.dsn, "select entity, record_ref from ops.quarantine where system = %s "
                           "and source like %s order by 1", slug, f"{plm_name()} (re-delivery %") \
        == [("bom_lines", "file"), ("ecos", "file"), ("items", "file")]
    assert len(incidents(drops.dsn, slug, "redelivery_set_aside")) == 3
    assert not (inbox / ".parsed").exists() or not any((inbox / ".parsed").iterdir())


def test_a_valid_redelivery_replaces_the_rows_and_keeps_the_original_as_superseded(drops):
    inbox = drops.inbox("ems")
    slug = slug_of("ems")
    name = ems_name()
    deliver(inbox, name, GOOD)
    drops.run("ems", "meter_readings")
    corrected = body(EMS_HEADER, ems_lines(6, kwh="2.000"))
    deliver(inbox, name, corrected)

    result, _ = drops.run("ems", "meter_readings")

    assert (result.rows_loaded, result.rows_replaced) == (6, 8)
    assert rows(drops.dsn, f"select count(*), sum(kwh) from raw_{slug}.meter_readings") == [
        (6, Decimal("12.000"))]
    assert quarantine_count(drops.dsn, slug) == 0
    assert (inbox / "archive" / name).read_bytes() == corrected
    superseded = [n for n in names_in(inbox / "archive") if n != name]
    assert len(superseded) == 1 and superseded[0].startswith(f"{name}.superseded-")
    assert (inbox / "archive" / superseded[0]).read_bytes() == GOOD

    deliver(inbox, name, corrected)  # the same bytes again: nothing more to keep
    drops.run("ems", "meter_readings")
    assert len(names_in(inbox / "archive")) == 2
    assert raw_count(drops.dsn, slug, "meter_readings") == 6


# --- 5. over the reject threshold: only the bad file ------------------------------------------


@pytest.mark.parametrize("system, entity", [("ems", "meter_readings"), ("scada", "tag_values")])
def test_one_file_over_the_reject_threshold_is_quarantined_alone(drops, system, entity):
    inbox = drops.inbox(system)
    slug = slug_of(system)
    if system == "ems":
        per_file, bad = 8, 5
        good = [body(EMS_HEADER, ems_lines(8, machine=m)) for m in "AB"]
        lines = ems_lines(8, machine="C")
        lines[:bad] = [line.rsplit(";", 1)[0] + ";not-a-number" for line in lines[:bad]]
        names = [ems_name(site) for site in ("ERA", "ERB", "ERC")]
        header = EMS_HEADER
    else:
        per_file, bad = 100, 10
        good = [body(SCADA_HEADER, scada_lines(100, machine=m)) for m in ("A-1", "B-1")]
        lines = scada_lines(100, machine="C-1")
        lines[:bad] = [line.replace(";GOOD", "").replace(";counter;", ";counter;x") + ";GOOD"
                       for line in lines[:bad]]
        names = [scada_name(site) for site in ("ERA", "ERB", "ERC")]
        header = SCADA_HEADER
    for name, data in zip(names, [*good, body(header, lines)], strict=True):
        deliver(inbox, name, data)

    result, _ = drops.run(system, entity)

    assert raw_count(drops.dsn, slug, entity) == 2 * per_file
    assert raw_count(drops.dsn, slug, entity, names[2]) == 0
    assert quarantine_count(drops.dsn, slug) == per_file  # every line of the bad file
    assert raw_count(drops.dsn, slug, entity) + quarantine_count(drops.dsn, slug) == 3 * per_file
    assert names_in(inbox / "archive") == sorted(names[:2])
    assert names_in(inbox / "quarantine") == sorted([names[2], f"{names[2]}.reason.txt"])
    assert "rejected" in (inbox / "quarantine" / f"{names[2]}.reason.txt").read_text()
    assert [s for _, _, s, _, _ in incidents(drops.dsn, slug, "file_rejected")] == [names[2]]
    assert result.files_rejected.keys() == {names[2]}


# --- 6. encoding -------------------------------------------------------------------------------


def test_a_utf8_file_in_the_gb18030_inbox_is_set_aside(drops):
    inbox = drops.inbox("wms")
    slug = slug_of("wms")
    deliver(inbox, wms_name("ERF"), body(WMS_HEADER, wms_lines(2, "F"), "\r\n", "gb18030"))
    deliver(inbox, wms_name("ERG"), body(WMS_HEADER, wms_lines(2, "G"), "\r\n", "utf-8"))
    invalid = body(WMS_HEADER, wms_lines(2, "H"), "\r\n", "gb18030").replace(b"kg", b"k\x81 ", 1)
    deliver(inbox, wms_name("ERH"), invalid)

    drops.run("wms", "movements")

    assert (raw_count(drops.dsn, slug, "movements"), quarantine_count(drops.dsn, slug)) == (2, 4)
    assert rows(drops.dsn, f"select material_desc from raw_{slug}.movements order by 1") == [
        ("铝铸件毛坯",), ("黑色色母粒",)]
    reasons = dict(rows(drops.dsn, "select source, min(reason) from ops.quarantine "
                                   "where system = %s group by 1", slug))
    assert reasons[wms_name("ERG")] == "looks like UTF-8, the source declares gb18030"
    assert reasons[wms_name("ERH")].startswith("not valid gb18030: illegal multibyte sequence")
    assert "(line 2)" in reasons[wms_name("ERH")]
    payloads = [p for (p,) in rows(drops.dsn, "select raw_payload from ops.quarantine where "
                                              "source = %s order by 1", wms_name("ERG"))]
    assert "黑色色母粒" in payloads[0]  # recorded as the UTF-8 it is
    assert names_in(inbox / "quarantine") == sorted(
        [wms_name("ERG"), wms_name("ERH"), f"{wms_name('ERG')}.reason.txt",
         f"{wms_name('ERH')}.reason.txt"])


# --- 7. size limits ----------------------------------------------------------------------------


def test_file_and_record_size_limits(drops):
    inbox = drops.inbox("ems")
    slug = slug_of("ems")
    big = body(EMS_HEADER, ems_lines(200, machine="B"))  # 13.8 KB
    long_lines = ems_lines(40, machine="L")  # 1 bad of 40: under the reject threshold
    long_lines[1] = long_lines[1] + "9" * 5000  # line 3: a 5 KB record
    deliver(inbox, ems_name("ERB"), big)
    deliver(inbox, ems_name("ERL"), body(EMS_HEADER, long_lines))
    deliver(inbox, ems_name("ERS"), body(EMS_HEADER, ems_lines(8, machine="S")))

    drops.run("ems", "meter_readings", max_file_bytes=10_000, max_record_bytes=1000)

    # the big file: one row naming it (not read); the long line: quarantined; the rest loads
    assert raw_count(drops.dsn, slug, "meter_readings") == 39 + 8
    assert quarantine_count(drops.dsn, slug) == 1 + 1
    (ref, reason, payload), = rows(drops.dsn, "select record_ref, reason, raw_payload from "
                                              "ops.quarantine where source = %s", ems_name("ERL"))
    assert ref == "line 3" and f"is {len(long_lines[1])} bytes" in reason
    assert len(payload) <= 1024 and payload.startswith(long_lines[1][:100])
    (payload,) = rows(drops.dsn, "select raw_payload from ops.quarantine where source = %s",
                      ems_name("ERB"))[0]
    assert payload is None
    assert (inbox / "quarantine" / ems_name("ERB")).read_bytes() == big
    assert "over" in (inbox / "quarantine" / f"{ems_name('ERB')}.reason.txt").read_text()


def test_a_64_mib_line_is_quarantined_in_linear_time_and_bounded_memory(
        drops, tmp_path, warehouse_dsn):
    def prepare(inbox, line_bytes: int) -> dict[str, str]:
        inbox.mkdir(parents=True)
        for name, header, lines in (
                (ems_name("ERX"), EMS_HEADER, ems_lines(41)),
                (scada_name("ERX"), SCADA_HEADER, scada_lines(41))):
            with open(inbox / name, "wb") as fh:  # 40 good lines, the 21st 64 MiB longer
                fh.write("\n".join([header, *lines[:21]]).encode())
                fh.writelines(b"7" * (1 << 20) for _ in range(line_bytes // (1 << 20)))
                fh.write(b"7" * (line_bytes % (1 << 20)))
                fh.write(("\n" + "\n".join(lines[21:]) + "\n").encode())
            age(inbox / name)
        return dict([conn_env(slug_of("ems"), inbox), conn_env(slug_of("scada"), inbox)])

    args = {"dsn": warehouse_dsn}
    baseline = run_child("csv", args, prepare(tmp_path / "small", 10))
    for system in ("ems", "scada"):
        reset(warehouse_dsn, slug_of(system))
    big = run_child("csv", args, prepare(tmp_path / "big", 64 << 20))

    for system, entity in (("ems", "meter_readings"), ("scada", "tag_values")):
        result = big["results"][system]
        assert (result["rows_loaded"], result["rows_quarantined"]) == (40, 1), system
        assert raw_count(warehouse_dsn, slug_of(system), entity) == 40
        (ref, reason, size), = rows(warehouse_dsn, "select record_ref, reason, "
                                    "length(raw_payload) from ops.quarantine where system = %s",
                                    slug_of(system))
        line = (ems_lines(41) if system == "ems" else scada_lines(41))[20]
        assert ref == "line 22" and f"is {len(line) + (64 << 20)} bytes" in reason, reason
        assert size <= 1024
    assert big["peak_rss_mb"] - baseline["peak_rss_mb"] < 200, (big, baseline)
    assert big["seconds"] < 15, big


# --- 8. a real CSV parser ----------------------------------------------------------------------


def test_quoted_fields_hold_the_delimiter_a_line_break_and_a_quote(drops):
    inbox = drops.inbox("wms")
    slug = slug_of("wms")
    stem = "RECEIPT;2026-10-20 07:01:00;ERF;200011"
    lines = [f'Q1;{stem};"黑色;色母粒";L1;1.5;kg;DOCK;RM-01;PO1',
             f'Q2;{stem};"两行\r\n文本";L2;2.5;kg;DOCK;RM-01;PO2',
             f'Q3;{stem};"说 ""好""";L3;3.5;kg;DOCK;RM-01;PO3',
             f"Q4;{stem};短;L4;4.5;kg;DOCK;RM-01"]  # a field short: line 6
    deliver(inbox, wms_name(), body(WMS_HEADER, lines, "\r\n", "gb18030"))
    scada = scada_lines(100)
    scada[5] = scada[5].replace(";GOOD", ';"GOOD;checked"')
    deliver(drops.inbox("scada"), scada_name(), body(SCADA_HEADER, scada))

    drops.run("wms", "movements")
    drops.run("scada", "tag_values")  # the fast path hands a quoted file to the parser

    assert rows(drops.dsn, f"select movement_id, material_desc from raw_{slug}.movements "
                           "order by 1") == [("Q1", "黑色;色母粒"), ("Q2", "两行\r\n文本"),
                                             ("Q3", '说 "好"')]
    assert rows(drops.dsn, "select record_ref, reason from ops.quarantine where system = %s",
                slug) == [("line 6", "11 fields where the header has 12")]
    assert raw_count(drops.dsn, slug, "movements") + quarantine_count(drops.dsn, slug) == 4
    assert scalar(drops.dsn, f"select quality from raw_{slug_of('scada')}.tag_values "
                             "where value = 105") == "GOOD;checked"
    assert raw_count(drops.dsn, slug_of("scada"), "tag_values") == 100


# --- 9. PLM: parsed once per file, streaming ---------------------------------------------------


def test_plm_export_is_parsed_once_for_all_three_entities(drops, monkeypatch):
    inbox = drops.inbox("plm")
    slug = slug_of("plm")
    counts = write_plm_export(inbox / plm_name(), items=50, boms=5, components=4, ecos=3)
    age(inbox / plm_name())
    parsed = []
    parse_into = plm_xml._parse_into
    monkeypatch.setattr(plm_xml, "_parse_into",
                        lambda *a, **k: parsed.append(a[1]) or parse_into(*a, **k))

    drops.run("plm", "items", start=PLM_DAY, length=timedelta(days=1))
    spools = list((inbox / ".parsed").iterdir())
    assert [p.name.startswith(plm_name()) for p in spools if p.is_dir()] == [True]
    assert (inbox / plm_name()).exists()  # two entities still to read it
    drops.run("plm", "bom_lines", start=PLM_DAY, length=timedelta(days=1))
    drops.run("plm", "ecos", start=PLM_DAY, length=timedelta(days=1))

    assert parsed == [plm_name()]
    assert {e: raw_count(drops.dsn, slug, e) for e in counts} == counts
    assert quarantine_count(drops.dsn, slug) == 0
    assert names_in(inbox / "archive") == [plm_name()]
    assert list((inbox / ".parsed").iterdir()) == []  # the spool goes with the last entity


def test_a_large_plm_export_is_parsed_once_in_bounded_memory(tmp_path, warehouse_dsn):
    def prepare(inbox, items: int, repeat: int) -> tuple[dict[str, int], dict[str, str]]:
        inbox.mkdir(parents=True)
        counts = write_plm_export(inbox / plm_name(), items=items, boms=items // 20,
                                  components=8, ecos=items // 20, name_repeat=repeat)
        age(inbox / plm_name())
        reset(warehouse_dsn, slug_of("plm"))
        return counts, dict([conn_env(slug_of("plm"), inbox)])

    args = {"dsn": warehouse_dsn}
    counts, env = prepare(tmp_path / "small", 20, 1)
    baseline = run_child("plm", args, env)
    counts, env = prepare(tmp_path / "big", 30_000, 55)
    size_mb = (tmp_path / "big" / plm_name()).stat().st_size / 2**20
    big = run_child("plm", args, env)

    assert size_mb > 30
    assert big["parses"] == [plm_name()]
    for entity, expected in counts.items():
        assert big["results"][entity]["rows_loaded"] == expected, entity
        assert raw_count(warehouse_dsn, slug_of("plm"), entity) == expected
    assert quarantine_count(warehouse_dsn, slug_of("plm")) == 0
    # lxml's whole tree of this export alone takes ~140 MB (the old client built it twice per
    # entity); the stream stays within a few MB of the tiny export's child
    assert big["peak_rss_mb"] - baseline["peak_rss_mb"] < 60, (size_mb, big, baseline)
    reset(warehouse_dsn, slug_of("plm"))
