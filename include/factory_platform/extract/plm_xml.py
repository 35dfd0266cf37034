"""XML-drop client (interface `xml_drop`): the PLM's daily exports.

Files are picked like the delimited drops (`extract.files`: the day in the name, own interval
from inbox/archive/quarantine, lookback and late files while in the inbox, only once stable,
links and special files set aside unread, sha256 for a file delivered twice, the re-delivery
rule for a name already archived, unmatched names quarantined). Each entity takes its records
from the same files — `item` (one per `Items/Item`), `bom_line` (one per `BOMs/BOM/Component`),
`eco` (one per `ECOs/ECO`, its `Affected` revisions as JSON) — each carrying the export's site,
`exportedAt` and type. Attributes the registry does not know are kept (`_extra`).

**Parsed once, streaming.** A file is parsed once for all three entities, with
`lxml.etree.iterparse` (entity resolution, DTD loading and network access off, so an export
cannot make the parser read local files or call out; entity references stay literal, `&x;`),
each record's element cleared as soon as it is written, so memory does not grow with the file.
The first entity task to reach a file spools every entity's records as JSON lines to
`<inbox>/.parsed/<file>.<sha256 prefix>/<record kind>.jsonl` (written in a temporary folder
and renamed into place, under a lock, so concurrent tasks parse it once); each entity task
reads its own spool. The spool goes when every entity has committed the file (or, left over by
an interrupted run, after two days).

Because several entities read one file, a file moves to `archive/` (or `quarantine/`) only when
every entity has committed it; until then a marker `<inbox>/.loaded/<entity>/<file>` (holding
that entity's reason, when it set the file aside) says which ones have, so a lookback run does
not load it twice for the same entity; the file goes to `quarantine/` when any entity set it
aside or rejected it. A file that is not well-formed XML (or not a PLM export) is set aside
whole: one `ops.quarantine` row per entity with the parser's reason and the file's first bytes.
A re-delivery of an archived name that is broken, or holds no records at all, is set aside
under its own name (`files` module docstring); a valid one replaces the loaded rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from factory_platform.extract.files import (
    ARCHIVE,
    INBOX,
    QUARANTINE,
    DropFile,
    NotRegularFile,
    Plan,
    describe,
    duplicates_of,
    move_file,
    open_regular,
    plan_files,
    safe_folder,
    set_aside,
    settle_unmatched,
    write_text_safely,
)
from factory_platform.extract.incidents import Incident
from factory_platform.extract.load import Extraction, SourceRecord

log = logging.getLogger(__name__)

MARKERS = ".loaded"
PARSED = ".parsed"
SPOOL_MAX_AGE = timedelta(days=2)  # a spool left by an interrupted run goes after this
RECORD_KINDS = ("item", "bom_line", "eco")
RAW_TEXT_HEAD = 1024  # what is kept of a record's XML beyond the record limit
ITEM_ATTRIBUTES = {"number": "number", "mesItem": "mes_item", "type": "item_type",
                   "uom": "uom", "revision": "revision"}
BOM_ATTRIBUTES = {"parent": "parent_number", "revision": "bom_revision",
                  "effectiveFrom": "effective_from"}
COMPONENT_ATTRIBUTES = {"number": "component_number", "qty": "qty", "uom": "uom"}
ECO_ATTRIBUTES = {"number": "eco_number", "status": "status", "releasedAt": "released_at",
                  "effectiveFrom": "effective_from"}
# element paths (from the root) of the records of each kind
RECORD_PATHS = {("PLMExport", "Items", "Item"): "item",
                ("PLMExport", "BOMs", "BOM", "Component"): "bom_line",
                ("PLMExport", "ECOs", "ECO"): "eco"}
BOM_PATH = ("PLMExport", "BOMs", "BOM")


class NotAnExport(ValueError):
    """The file is XML but not a PLM export."""


class FileChanged(RuntimeError):
    """The file changed between the listing and the parse: it is taken once stable."""


def secure_parser_options() -> dict[str, Any]:
    """lxml options: resolve no entities, load no DTD, never touch the network."""
    return {"resolve_entities": False, "no_network": True, "load_dtd": False,
            "huge_tree": False, "remove_comments": True, "remove_pis": True}


@lru_cache(maxsize=1024)
def snake(name: str) -> str:
    """`effectiveFrom` → `effective_from` (names for undeclared attributes)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _attributes(element, mapping: dict[str, str], prefix: str = "") -> dict[str, Any]:
    return {(mapping[key] if key in mapping else prefix + snake(key)): value
            for key, value in element.attrib.items()}


def _texts_by_lang(element, tag: str, stem: str) -> dict[str, str]:
    return {f"{stem}_{child.get('lang', 'xx')}": _text(child) for child in element.findall(tag)}


def _text(element) -> str:
    """An element's text; an entity reference stays as written (`&name;`), never resolved."""
    from lxml import etree

    parts = [element.text or ""]
    for child in element:
        if child.tag is etree.Entity:
            parts.append(child.text or "")
        parts.append(child.tail or "")
    return "".join(parts)


def _payload(kind: str, element, export: dict, bom_head: dict | None) -> tuple[str, dict]:
    if kind == "item":
        return (f"Item {element.get('number')}",
                {**export, **_attributes(element, ITEM_ATTRIBUTES),
                 **_texts_by_lang(element, "Name", "name")})
    if kind == "bom_line":
        head = bom_head or {}
        ref = (f"BOM {head.get('parent_number')} rev {head.get('bom_revision')} component "
               f"{element.get('number')}")
        return ref, {**export, **head, **_attributes(element, COMPONENT_ATTRIBUTES)}
    affected = [dict(a.attrib) for a in element.iterfind("Affected")]
    return (f"ECO {element.get('number')}",
            {**export, **_attributes(element, ECO_ATTRIBUTES), "affected": affected,
             **_texts_by_lang(element, "Description", "description")})


def stream_export(source_file, file_name: str,
                  max_record_bytes: int = 1 << 20) -> Iterator[tuple[str, SourceRecord]]:
    """(record kind, record) of every record of an export, in document order, in one
    streaming pass (raises on malformed XML or a root that is not `<PLMExport>`). Each record
    element is cleared once written, as is every element outside a record, so memory stays
    bounded by the largest record, not the file."""
    from lxml import etree

    path: list[str] = []
    export: dict[str, Any] = {}
    bom_head: dict | None = None
    for event, element in etree.iterparse(source_file, events=("start", "end"),
                                          **secure_parser_options()):
        if event == "start":
            path.append(element.tag)
            if len(path) == 1:
                if element.tag != "PLMExport":
                    raise NotAnExport(f"root element is <{element.tag}>, expected <PLMExport>")
                export = {"site": element.get("site"), "exported_at": element.get("exportedAt"),
                          "export_type": element.get("type")}
            elif tuple(path) == BOM_PATH:
                bom_head = _attributes(element, BOM_ATTRIBUTES, prefix="bom_")
            continue
        tags = tuple(path)
        path.pop()
        kind = RECORD_PATHS.get(tags)
        if kind:
            ref, payload = _payload(kind, element, export, bom_head)
            raw = etree.tostring(element, encoding="unicode", with_tail=False).strip()
            if len(raw) > max_record_bytes:
                raw = raw[:RAW_TEXT_HEAD] + f" … [cut: {len(raw)} characters in all]"
            yield kind, SourceRecord(source=file_name,
                                     record_ref=f"{ref} (line {element.sourceline})",
                                     payload=payload, raw_text=raw)
        elif any(tags[:len(p)] == p and len(tags) > len(p) for p in RECORD_PATHS):
            continue  # part of a record: cleared with it
        if len(tags) > 1:
            element.clear(keep_tail=False)
            parent = element.getparent()
            while parent is not None and element.getprevious() is not None:
                del parent[0]
        if tags == BOM_PATH:
            bom_head = None


# --- the spool: one parse per file for every entity --------------------------------------------

@dataclass(frozen=True)
class Spool:
    name: str  # the file's
    folder: Path  # <inbox>/.parsed/<name>.<sha256 prefix>
    counts: dict[str, int]
    error: str | None


def _parse_into(fh, file_name: str, folder: Path, max_record_bytes: int
                ) -> tuple[dict[str, int], str | None]:
    """Parse an export once, writing each kind's records to `<folder>/<kind>.jsonl`."""
    from lxml import etree

    counts = dict.fromkeys(RECORD_KINDS, 0)
    error = None
    with contextlib.ExitStack() as stack:
        outputs = {kind: stack.enter_context(open(folder / f"{kind}.jsonl", "w",
                                                  encoding="utf-8"))
                   for kind in RECORD_KINDS}
        try:
            for kind, record in stream_export(fh, file_name, max_record_bytes):
                outputs[kind].write(json.dumps(
                    [record.record_ref, record.payload, record.raw_text],
                    ensure_ascii=False) + "\n")
                counts[kind] += 1
        except etree.XMLSyntaxError as exc:
            error = f"not well-formed XML: {str(exc)[:300]}"
        except NotAnExport as exc:
            error = str(exc)[:300]
    if error:
        counts = dict.fromkeys(RECORD_KINDS, 0)
        for kind in RECORD_KINDS:
            (folder / f"{kind}.jsonl").write_bytes(b"")
    return counts, error


def spool_export(file: DropFile, max_record_bytes: int) -> Spool:
    """The file's parsed records, parsing it now unless another entity task already did
    (`<inbox>/.parsed/<name>.<sha256 prefix>/`, written atomically under a lock). Raises
    `FileChanged` when the file is not what was listed, `NotRegularFile` for a link."""
    parsed = safe_folder(file.inbox, PARSED, create=True)
    with file.open() as fh:
        before = os.fstat(fh.fileno())
        if file.location == INBOX and not file.unchanged(before):
            raise FileChanged(f"{file.name} changed after it was listed")
        key = f"{file.name}.{file.sha256()[:16]}"
        folder = parsed / key
        lock = os.open(parsed / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                       | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            meta = folder / "meta.json"
            if not os.path.lexists(meta):
                if os.path.lexists(folder):  # a spool left half-made
                    shutil.rmtree(folder, ignore_errors=True)
                tmp = parsed / f".tmp-{key}-{os.getpid()}-{secrets.token_hex(4)}"
                os.mkdir(tmp)
                try:
                    fh.seek(0)
                    counts, error = _parse_into(fh, file.name, tmp, max_record_bytes)
                    (tmp / "meta.json").write_text(json.dumps({"counts": counts, "error": error}),
                                                   encoding="utf-8")
                    os.rename(tmp, folder)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
            with open_regular(meta) as meta_fh:
                data = json.loads(meta_fh.read().decode("utf-8"))
        finally:
            os.close(lock)
        after = os.fstat(fh.fileno())
        if file.location == INBOX and not file.unchanged(after):
            raise FileChanged(f"{file.name} changed while it was parsed")
    return Spool(file.name, folder, data["counts"], data["error"])


def read_spool(spool: Spool, kind: str) -> Iterator[SourceRecord]:
    with open_regular(spool.folder / f"{kind}.jsonl") as fh:
        for line in fh:
            ref, payload, raw = json.loads(line)
            yield SourceRecord(source=spool.name, record_ref=ref, payload=payload,
                               raw_text=raw)


def spool_done(spool: Spool, source, entity_name: str) -> None:
    """Note that an entity committed the spool's file; remove the spool once all have."""
    if not spool.folder.exists():
        return
    (spool.folder / f"{entity_name}.done").touch()
    if all((spool.folder / f"{e.name}.done").exists() for e in source.entities):
        remove_spool(spool.folder)


def remove_spool(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    (folder.parent / f"{folder.name}.lock").unlink(missing_ok=True)


def sweep_spools(inbox: Path) -> None:
    """Remove spools (and temporary folders) an interrupted run left, after `SPOOL_MAX_AGE`."""
    parsed = safe_folder(inbox, PARSED)
    if parsed is None:
        return
    cutoff = time.time() - SPOOL_MAX_AGE.total_seconds()
    with os.scandir(parsed) as entries:
        for entry in entries:
            try:
                old = entry.stat(follow_symlinks=False).st_mtime < cutoff
            except FileNotFoundError:
                continue
            if old and entry.is_dir(follow_symlinks=False):
                remove_spool(Path(entry.path))


# --- the client ----------------------------------------------------------------------------------

def _marker(file: DropFile, entity_name: str) -> Path:
    return file.inbox / MARKERS / entity_name / file.name


def open_extraction(source, entity, window) -> Extraction:
    """Client entry point (see `extract.clients`): the entity's records from the window's files."""
    kind = entity.option("record")
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown PLM record kind {kind!r}")
    plan = plan_files(source, entity, window,
                      done=lambda f: os.path.lexists(_marker(f, entity.name)))
    sweep_spools(plan.inbox)
    extraction = Extraction(records=(), source_label="", replace_sources=[])
    extraction.incidents.extend(plan.incidents)
    outcome: dict[str, tuple[DropFile, str | None, str | None, Spool | None]] = {}
    readable: list[Spool] = []
    spools: dict[str, Spool] = {}
    for file in plan.chosen:
        unread = True
        if not file.regular:
            problem = f"{file.name} is a {file.kind}, not a regular file: not read, not followed"
        elif file.size > source.max_file_bytes:
            problem = (f"file is {file.size} bytes, over {source.system}'s limit of "
                       f"{source.max_file_bytes} bytes: not read")
        else:
            try:
                spools[file.name] = spool_export(file, source.max_record_bytes)
            except NotRegularFile as exc:
                problem = f"{exc.strerror}: not read, not followed"
            except FileChanged as exc:
                _wait(plan, extraction, file, f"{exc}; taken once stable")
                continue
            except FileNotFoundError:  # moved by a concurrent run since the listing
                plan.late.pop(file.name, None)
                continue
            else:
                spool = spools[file.name]
                unread = False
                problem = f"not a readable PLM export: {spool.error}" if spool.error else None
                if not problem and plan.is_redelivery(file) and not sum(spool.counts.values()):
                    problem = "no records at all"
        if problem:
            as_name = set_aside(extraction, plan, file, problem, readable=not unread,
                                encoding="utf-8", per_line=False,
                                sha256=None if unread else file.sha256(),
                                max_payload_bytes=source.max_record_bytes)
            outcome[file.name] = (file, f"{entity.name}: {problem}", as_name,
                                  spools.get(file.name))
            continue
        outcome[file.name] = (file, None, None, spools[file.name])
    stable = [f for f in plan.found if f.name not in plan.waiting]
    duplicate_of = duplicates_of([f for f in plan.chosen if f.name in spools
                                  and outcome.get(f.name, (0, None))[1] is None], stable)
    for name, (file, reason, _, spool) in outcome.items():
        if reason is not None:
            continue
        if name in duplicate_of:
            extraction.duplicates += spool.counts[kind]
            continue
        extraction.replace_sources.append(name)
        readable.append(spool)
    late = [plan.late[name] for name in outcome if name in plan.late]
    extraction.covers_from = min(late) if late else None
    extraction.incidents = [i for i in extraction.incidents
                            if i.kind != "file_late" or i.subject in plan.late]
    extraction.source_label = describe(plan.inbox, [f for f, *_ in outcome.values()])

    def records() -> Iterator[SourceRecord]:
        for spool in readable:
            yield from read_spool(spool, kind)

    extraction.records = records()
    rejected: dict[str, str] = {}

    def settle() -> None:
        for name, (file, reason, as_name, spool) in outcome.items():
            settle_file(source, entity.name, file, rejected.get(name, reason), as_name,
                        spool.folder.name if spool else None)
            if spool:
                spool_done(spool, source, entity.name)
        if plan.unmatched:
            settle_unmatched(source, plan)

    def file_rejected(name: str, reason: str) -> None:
        rejected[name] = f"{entity.name}: {reason}"
        if name in outcome:
            file, _, _, spool = outcome[name]
            settle_file(source, entity.name, file, rejected[name], None,
                        spool.folder.name if spool else None)

    extraction.on_committed = settle
    extraction.on_file_rejected = file_rejected
    return extraction


def _wait(plan: Plan, extraction: Extraction, file: DropFile, why: str) -> None:
    plan.waiting[file.name] = why
    plan.late.pop(file.name, None)
    extraction.incidents.append(Incident("file_waiting", file.name, why))


def settle_file(source, entity_name: str, file: DropFile, reason: str | None,
                as_name: str | None = None, version: str | None = None) -> None:
    """Mark the file committed for this entity (with its reason, if it set the file aside,
    and the version it read: `<name>.<sha256 prefix>`); move it once every entity has — to
    quarantine/ when any of them set it aside. When the entities read different versions
    (the file was replaced in between), the markers of the older version go: those entities
    read it again."""
    try:
        location = file.path.parent
    except FileNotFoundError:
        return
    if location != file.folder(INBOX):
        # read again from archive/ or quarantine/ (a re-run): keep it where it belongs
        move_file(file, QUARANTINE if reason else ARCHIVE,
                  f"{source.system}: {reason}" if reason else None)
        return
    markers = safe_folder(file.inbox, MARKERS, create=True)
    folder = safe_folder(markers, entity_name, create=True)
    write_text_safely(folder, file.name, json.dumps({"reason": reason, "as_name": as_name,
                                                     "version": version}))
    states = []
    for e in source.entities:
        try:
            with open_regular(_marker(file, e.name)) as fh:
                states.append(json.loads(fh.read().decode("utf-8") or "{}"))
        except (FileNotFoundError, NotRegularFile, ValueError):
            return  # another entity has not committed it yet
    if len({s.get("version") for s in states}) > 1:
        for e, s in zip(source.entities, states, strict=True):
            if s.get("version") != version:
                _marker(file, e.name).unlink(missing_ok=True)
        return
    reasons = [s["reason"] for s in states if s.get("reason")]
    as_name = next((s["as_name"] for s in states if s.get("as_name")), None)
    move_file(file, QUARANTINE if reasons else ARCHIVE,
              f"{source.system}: {'; '.join(reasons)}" if reasons else None,
              as_name=as_name if reasons else None)
    # moved, or left in the inbox because it changed since it was read: either way every
    # entity takes a file still in the inbox again
    for e in source.entities:
        _marker(file, e.name).unlink(missing_ok=True)
