"""XML-drop client (interface `xml_drop`): the PLM's daily exports.

Files are picked like the delimited drops (`extract.files`: the day in the name, own interval
from inbox/archive/quarantine, lookback files while in the inbox, sha256 for a file delivered
twice) and parsed with lxml with entity resolution, DTD loading and network access off, so an
export cannot make the parser read local files or call out. Each entity takes its records from
the same files — `item` (one per `Items/Item`), `bom_line` (one per `BOMs/BOM/Component`), `eco`
(one per `ECOs/ECO`, its `Affected` revisions as JSON) — each carrying the export's site,
`exportedAt` and type. Attributes the registry does not know are kept (`_extra`).

Because several entities read one file, a file moves to `archive/` (or `quarantine/`) only when
every entity has committed it; until then a marker `<inbox>/.loaded/<entity>/<file>` says
which ones have, so a lookback run does not load it twice for the same entity. A file that is
not well-formed XML is set aside whole: one `ops.quarantine` row per entity with the parser's
reason and the file's text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from factory_platform.extract.files import (
    ARCHIVE,
    INBOX,
    QUARANTINE,
    DropFile,
    choose_files,
    describe,
    duplicates_of,
    find_drop_files,
    inbox_of,
    move_file,
)
from factory_platform.extract.loader import Extraction, SetAsideFile, SourceRecord

log = logging.getLogger(__name__)

MARKERS = ".loaded"
ITEM_ATTRIBUTES = {"number": "number", "mesItem": "mes_item", "type": "item_type",
                   "uom": "uom", "revision": "revision"}
BOM_ATTRIBUTES = {"parent": "parent_number", "revision": "bom_revision",
                  "effectiveFrom": "effective_from"}
COMPONENT_ATTRIBUTES = {"number": "component_number", "qty": "qty", "uom": "uom"}
ECO_ATTRIBUTES = {"number": "eco_number", "status": "status", "releasedAt": "released_at",
                  "effectiveFrom": "effective_from"}


class NotAnExport(ValueError):
    """The file is XML but not a PLM export."""


def secure_parser():
    """An lxml parser that resolves no entities, loads no DTD and never touches the network."""
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


def snake(name: str) -> str:
    """`effectiveFrom` → `effective_from` (names for undeclared attributes)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _attributes(element, mapping: dict[str, str], prefix: str = "") -> dict[str, Any]:
    return {mapping.get(key, prefix + snake(key)): value for key, value in element.attrib.items()}


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


def parse_export(path: Path, record_kind: str, file_name: str) -> Iterator[SourceRecord]:
    """Records of one kind from one export file (raises on malformed XML)."""
    from lxml import etree

    tree = etree.parse(str(path), secure_parser())
    root = tree.getroot()
    if root.tag != "PLMExport":
        raise NotAnExport(f"root element is <{root.tag}>, expected <PLMExport>")
    export = {"site": root.get("site"), "exported_at": root.get("exportedAt"),
              "export_type": root.get("type")}
    if record_kind == "item":
        for item in root.iterfind("Items/Item"):
            payload = {**export, **_attributes(item, ITEM_ATTRIBUTES),
                       **_texts_by_lang(item, "Name", "name")}
            yield _record(file_name, f"Item {item.get('number')}", item, payload)
    elif record_kind == "bom_line":
        for bom in root.iterfind("BOMs/BOM"):
            head = _attributes(bom, BOM_ATTRIBUTES, prefix="bom_")
            for component in bom.iterfind("Component"):
                payload = {**export, **head, **_attributes(component, COMPONENT_ATTRIBUTES)}
                ref = (f"BOM {bom.get('parent')} rev {bom.get('revision')} component "
                       f"{component.get('number')}")
                yield _record(file_name, ref, component, payload)
    elif record_kind == "eco":
        for eco in root.iterfind("ECOs/ECO"):
            affected = [dict(a.attrib) for a in eco.iterfind("Affected")]
            payload = {**export, **_attributes(eco, ECO_ATTRIBUTES), "affected": affected,
                       **_texts_by_lang(eco, "Description", "description")}
            yield _record(file_name, f"ECO {eco.get('number')}", eco, payload)
    else:
        raise ValueError(f"unknown PLM record kind {record_kind!r}")


def _record(file_name: str, ref: str, element, payload: dict[str, Any]) -> SourceRecord:
    from lxml import etree

    return SourceRecord(source=file_name, record_ref=f"{ref} (line {element.sourceline})",
                        payload=payload,
                        raw_text=etree.tostring(element, encoding="unicode").strip())


def _marker(file: DropFile, entity_name: str) -> Path:
    return file.inbox / MARKERS / entity_name / file.name


def open_extraction(source, entity, window) -> Extraction:
    """Client entry point (see `extract.clients`): the entity's records from the window's files."""
    from lxml import etree

    inbox = inbox_of(source)
    kind = entity.option("record")
    found = find_drop_files(inbox, entity.endpoint, window.start, window.end)
    chosen = choose_files(found, window, done=lambda f: _marker(f, entity.name).exists())
    duplicate_of = duplicates_of(chosen, found)
    extraction = Extraction(records=(), source_label=describe(inbox, chosen),
                            replace_sources=[f.name for f in chosen])
    reasons: dict[str, str] = {}
    readable: list[DropFile] = []
    for file in chosen:
        try:
            count = sum(1 for _ in parse_export(file.path, kind, file.name))
        except (etree.XMLSyntaxError, NotAnExport) as exc:
            reasons[file.name] = f"not a readable PLM export: {exc}"
            extraction.set_aside.append(SetAsideFile(file.name, str(file.path),
                                                     reasons[file.name], per_line=False))
            continue
        if file.name in duplicate_of:
            extraction.duplicates += count
            continue
        readable.append(file)

    def records() -> Iterator[SourceRecord]:
        for file in readable:
            yield from parse_export(file.path, kind, file.name)

    extraction.records = records()

    def settle() -> None:
        for file in chosen:
            settle_file(source, entity.name, file, reasons.get(file.name))

    extraction.on_committed = settle
    return extraction


def settle_file(source, entity_name: str, file: DropFile, reason: str | None) -> None:
    """Mark the file committed for this entity; move it once every entity has."""
    destination = QUARANTINE if reason else ARCHIVE
    try:
        location = file.path.parent
    except FileNotFoundError:
        return
    if location != file.folder(INBOX):
        move_file(file, destination, reason)  # already settled: keep it where it belongs
        return
    marker = _marker(file, entity_name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    if all(_marker(file, e.name).exists() for e in source.entities):
        move_file(file, destination, f"{source.system}: {reason}" if reason else None)
        for e in source.entities:
            _marker(file, e.name).unlink(missing_ok=True)
