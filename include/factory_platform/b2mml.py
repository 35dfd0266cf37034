"""Production confirmations for the ERP as B2MML (MESA International, release V0700) documents.

In V0700 the production-specific documents of older releases are generalised: a production
confirmation is a `ProcessOperationsPerformance` BOD (`B2MML-OperationsPerformance.xsd`) whose
operations type is `Production`; there is no `ProcessProductionPerformance`, `ProductionResponse`
or `MaterialProducedActual` any more. One document carries one site's confirmations.

Paths are under `DataArea/OperationsPerformance`; `SR` is `OperationsResponse/SegmentResponse`.

| input                     | B2MML                                                              |
| ------------------------- | ------------------------------------------------------------------ |
| document_id               | `/ApplicationArea/BODID`, `ID`                                     |
| created_at                | `/ApplicationArea/CreationDateTime`, `PublishedDate`               |
| sender                    | `/ApplicationArea/Sender/LogicalID`                                |
| site_code                 | `HierarchyScope` (EquipmentLevel `Site`) at every level            |
| order_number              | `OperationsResponse/ID`, `…/OperationsRequestID`, `SR/…RequestID`  |
| confirmation_key          | `SR/ID`                                                            |
| operation_id              | `SR/SegmentRequirementID`                                          |
| started_at, ended_at      | `SR/ActualStartTime`, `SR/ActualEndTime` (UTC, `Z`)                |
| line_code                 | `SR/HierarchyScope/HierarchyScopeChild` (`ProductionLine`)         |
| posting_version           | `SR/SegmentData[ID=posting_version]/Value` (integer)               |
| production_date           | `SR/SegmentData[ID=production_date]/Value` (date)                  |
| shift_code                | `SR/SegmentData[ID=shift_code]/Value` (string)                     |
| machine_code              | `SR/EquipmentActual/ID`, `…/EquipmentID`                           |
| run_seconds               | `SR/EquipmentActual/EquipmentActualProperty[ID=run_seconds]` (SEC) |
| material_code             | `SR/MaterialActual/ID`, `…/MaterialDefinitionID` (use `Produced`)  |
| good, scrap, rework_qty   | `SR/MaterialActual/Quantity[Key=good, scrap, rework]/QuantityString` |
| uom                       | `SR/MaterialActual/Quantity/UnitOfMeasure`                         |

Orders are written sorted by number and confirmations by (start, end, key), quantities as the
exact decimal text, timestamps in UTC: the same confirmations give the same bytes. Documents are
checked against the XSDs (directory `B2MML_XSD_DIR`, default: the vendored copy in `b2mml_xsd/`) with
`xmlschema`, loading only files under that directory. lxml and xmlschema are imported inside the
functions, so importing this module from DAG code is cheap.

"The Business To Manufacturing Markup Language (B2MML) is used courtesy of MESA International."
Every document carries this sentence as a comment, as the B2MML licence asks.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

B2MML_NAMESPACE = "http://www.mesa.org/xml/B2MML"
RELEASE_ID = "V0700"
ROOT_ELEMENT = "ProcessOperationsPerformance"
ENTRY_XSD = "B2MML-OperationsPerformance.xsd"
DEFAULT_XSD_DIR = Path(__file__).resolve().parent / "b2mml_xsd"  # vendored V0700 XSDs
ATTRIBUTION = (
    "The Business To Manufacturing Markup Language (B2MML) is used courtesy of MESA International."
)
OPERATIONS_TYPE = "Production"
MATERIAL_USE = "Produced"
SECONDS_UOM = "SEC"  # UN/ECE Recommendation 20 code for second
QUANTITY_KEYS = (("good", "good_qty"), ("scrap", "scrap_qty"), ("rework", "rework_qty"))
MAX_REPORTED_ERRORS = 5

CONFIRMATION_FIELDS = (
    "confirmation_key", "posting_version", "order_number", "operation_id", "site_code",
    "line_code", "machine_code", "material_code", "production_date", "shift_code", "started_at",
    "ended_at", "good_qty", "scrap_qty", "rework_qty", "uom", "run_seconds",
)
TEXT_FIELDS = ("confirmation_key", "order_number", "operation_id", "site_code", "line_code",
               "machine_code", "material_code", "shift_code", "uom")
SAFE_FILE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class B2mmlInvalid(ValueError):
    """A document that the B2MML V0700 schemas reject; `errors` lists every reason with its path."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
        hidden = len(errors) - MAX_REPORTED_ERRORS
        more = f" (and {hidden} more)" if hidden > 0 else ""
        super().__init__(
            f"invalid B2MML {ROOT_ELEMENT} document, {len(errors)} error(s): {shown}{more}")


@dataclass(frozen=True)
class Confirmation:
    """One row of `publish.pub_erp__production_confirmation`, checked."""

    confirmation_key: str
    posting_version: int
    order_number: str
    operation_id: str
    site_code: str
    line_code: str
    machine_code: str
    material_code: str
    production_date: date
    shift_code: str
    started_at: datetime
    ended_at: datetime
    good_qty: Decimal | int
    scrap_qty: Decimal | int
    rework_qty: Decimal | int
    uom: str
    run_seconds: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Confirmation:
        """Check a row's types and ranges; columns beyond the contract are ignored."""
        missing = [name for name in CONFIRMATION_FIELDS if name not in row]
        if missing:
            raise ValueError(f"confirmation {row.get('confirmation_key')!r} lacks {missing}")
        key = row["confirmation_key"]
        for name in TEXT_FIELDS:
            _check_text(key, name, row[name])
        for name in ("posting_version", "run_seconds"):
            _check_int(key, name, row[name], minimum=1 if name == "posting_version" else 0)
        for name in ("good_qty", "scrap_qty", "rework_qty"):
            _check_quantity(key, name, row[name])
        day = row["production_date"]
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ValueError(  # noqa: TRY004 - a row breaking the contract is a ValueError
                f"confirmation {key!r}: production_date must be a date, not {day!r}")
        for name in ("started_at", "ended_at"):
            value = row[name]
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise ValueError(f"confirmation {key!r}: {name} must be a timezone-aware datetime, "
                                 f"not {value!r}")
        if row["ended_at"] < row["started_at"]:
            raise ValueError(f"confirmation {key!r} ends ({row['ended_at']}) before it starts "
                             f"({row['started_at']})")
        return cls(**{name: row[name] for name in CONFIRMATION_FIELDS})


def _check_text(key: Any, name: str, value: Any) -> None:
    # B2MML identifiers are xsd:normalizedString: a tab or line break would not survive.
    if not isinstance(value, str) or not value.strip() or re.search(r"[\t\r\n]", value):
        where = f"confirmation {key!r}: " if key is not None else ""
        raise ValueError(f"{where}{name} must be a non-blank one-line text, not {value!r}")


def _check_int(key: Any, name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"confirmation {key!r}: {name} must be an int >= {minimum}, not {value!r}")


def _check_quantity(key: Any, name: str, value: Any) -> None:
    # A float would already carry a rounding error: only Decimal or int are written.
    exact = isinstance(value, Decimal) and value.is_finite()
    if not (exact or (isinstance(value, int) and not isinstance(value, bool))) or value < 0:
        raise ValueError(f"confirmation {key!r}: {name} must be a Decimal or int >= 0, "
                         f"not {value!r}")


def decimal_text(value: Decimal | int) -> str:
    """The exact decimal text of a quantity: no exponent, trailing zeros kept (`12.500`)."""
    if isinstance(value, Decimal):
        return format(value.copy_abs() if value.is_zero() else value, "f")
    return str(value)


def utc_text(value: datetime) -> str:
    """An aware datetime as xsd:dateTime in UTC (`2025-03-30T00:30:00Z`)."""
    if value.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is needed, not {value!r}")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def production_performance_document(
    confirmations: Iterable[Mapping[str, Any]],
    *,
    document_id: str,
    created_at: datetime,
    site_code: str,
    sender: str = "factory-platform",
) -> bytes:
    """One `ProcessOperationsPerformance` document (B2MML V0700) for one site's confirmations.

    One `OperationsResponse` per order, one `SegmentResponse` per confirmation (see the module
    docstring for the mapping). Raises ValueError for an empty input, a row of another site, a
    confirmation key given twice or a row that breaks the contract.
    """
    from lxml import etree

    for name, value in (("document_id", document_id), ("site_code", site_code), ("sender", sender)):
        _check_text(None, name, value)
    rows = [row if isinstance(row, Confirmation) else Confirmation.from_row(row)
            for row in confirmations]
    if not rows:
        raise ValueError("a B2MML OperationsPerformance needs at least one confirmation")
    other_sites = sorted({row.site_code for row in rows} - {site_code})
    if other_sites:
        raise ValueError(f"document for site {site_code!r} got confirmations of {other_sites}")
    keys = [row.confirmation_key for row in rows]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"confirmation keys given more than once: {twice}")

    orders: dict[str, list[Confirmation]] = {}
    for row in sorted(rows, key=lambda row: (row.order_number, row.started_at, row.ended_at,
                                             row.confirmation_key)):
        orders.setdefault(row.order_number, []).append(row)

    root = etree.Element(_tag(ROOT_ELEMENT), nsmap={None: B2MML_NAMESPACE},
                         releaseID=RELEASE_ID)
    root.addprevious(etree.Comment(f" {ATTRIBUTION} "))
    application_area = _sub(root, "ApplicationArea")
    _sub(_sub(application_area, "Sender"), "LogicalID", sender)
    _sub(application_area, "CreationDateTime", utc_text(created_at))
    _sub(application_area, "BODID", document_id)

    data_area = _sub(root, "DataArea")
    _sub(data_area, "Process")
    performance = _sub(data_area, "OperationsPerformance")
    _sub(performance, "ID", document_id)
    _sub(performance, "PublishedDate", utc_text(created_at))
    _sub(performance, "StartTime", utc_text(min(row.started_at for row in rows)))
    # V0700 spells this one element `Endtime` (OperationsResponse has `EndTime`).
    _sub(performance, "Endtime", utc_text(max(row.ended_at for row in rows)))
    _hierarchy_scope(performance, site_code)
    _sub(performance, "OperationsType", OPERATIONS_TYPE)
    for order_number, segments in orders.items():
        response = _sub(performance, "OperationsResponse")
        _sub(response, "ID", order_number)
        _sub(response, "StartTime", utc_text(min(row.started_at for row in segments)))
        _sub(response, "EndTime", utc_text(max(row.ended_at for row in segments)))
        _hierarchy_scope(response, site_code)
        _sub(response, "OperationsType", OPERATIONS_TYPE)
        _sub(response, "OperationsRequestID", order_number)
        for row in segments:
            _segment_response(response, row)

    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8",
                          pretty_print=True)


def _segment_response(parent, row: Confirmation) -> None:
    segment = _sub(parent, "SegmentResponse")
    _sub(segment, "ID", row.confirmation_key)
    _sub(segment, "ActualStartTime", utc_text(row.started_at))
    _sub(segment, "ActualEndTime", utc_text(row.ended_at))
    _hierarchy_scope(segment, row.site_code, row.line_code)
    _sub(segment, "OperationsType", OPERATIONS_TYPE)
    _sub(segment, "OperationsRequestID", row.order_number)
    _sub(segment, "SegmentRequirementID", row.operation_id)
    for name, text, data_type in (
        ("posting_version", str(row.posting_version), "integer"),
        ("production_date", row.production_date.isoformat(), "date"),
        ("shift_code", row.shift_code, "string"),
    ):
        data = _sub(segment, "SegmentData")
        _sub(data, "ID", name)
        _value(data, text, data_type)

    equipment = _sub(segment, "EquipmentActual")
    _sub(equipment, "ID", row.machine_code)
    _sub(equipment, "EquipmentID", row.machine_code)
    run_time = _sub(equipment, "EquipmentActualProperty")
    _sub(run_time, "ID", "run_seconds")
    _value(run_time, str(row.run_seconds), "integer", SECONDS_UOM)

    material = _sub(segment, "MaterialActual")
    _sub(material, "ID", row.material_code)
    _sub(material, "MaterialDefinitionID", row.material_code)
    _sub(material, "MaterialUse", MATERIAL_USE)
    for key, field in QUANTITY_KEYS:
        quantity = _sub(material, "Quantity")
        _sub(quantity, "QuantityString", decimal_text(getattr(row, field)))
        _sub(quantity, "DataType", "decimal")
        _sub(quantity, "UnitOfMeasure", row.uom)
        _sub(quantity, "Key", key)


def _hierarchy_scope(parent, site_code: str, line_code: str | None = None) -> None:
    scope = _sub(parent, "HierarchyScope")
    _sub(scope, "EquipmentID", site_code)
    _sub(scope, "EquipmentLevel", "Site")
    if line_code is not None:
        line = _sub(scope, "HierarchyScopeChild")
        _sub(line, "EquipmentID", line_code)
        _sub(line, "EquipmentLevel", "ProductionLine")


def _value(parent, text: str, data_type: str, unit: str | None = None) -> None:
    value = _sub(parent, "Value")
    _sub(value, "ValueString", text)
    _sub(value, "DataType", data_type)
    if unit is not None:
        _sub(value, "UnitOfMeasure", unit)


def _tag(name: str) -> str:
    return f"{{{B2MML_NAMESPACE}}}{name}"


def _sub(parent, name: str, text: str | None = None):
    from lxml import etree

    element = etree.SubElement(parent, _tag(name))
    if text is not None:
        element.text = text
    return element


def xsd_dir() -> Path:
    """Directory of the B2MML V0700 XSDs (`B2MML_XSD_DIR`)."""
    return Path(os.environ.get("B2MML_XSD_DIR", DEFAULT_XSD_DIR))


@functools.lru_cache(maxsize=4)
def _schema(entry: Path):
    import xmlschema

    # `sandbox`: includes and imports are read only from files under the XSD directory.
    return xmlschema.XMLSchema10(str(entry), allow="sandbox", defuse="always")


def validate(document: bytes) -> None:
    """Raise B2mmlInvalid unless `document` is a `ProcessOperationsPerformance` valid under V0700.

    The schema is compiled once per process (and XSD directory); the document is parsed with
    entities, DTDs and network off. The message names the first errors, each with its path
    (`/…/OperationsResponse[2]/SegmentResponse[1]/ActualStartTime`) and line.
    """
    import xmlschema
    from lxml import etree

    schema = _schema((xsd_dir() / ENTRY_XSD).resolve())
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False)
    try:
        root = etree.fromstring(document, parser)
    except etree.XMLSyntaxError as error:
        reason = f"/ (line {error.lineno}): not well-formed XML: {error.msg}"
        raise B2mmlInvalid([reason]) from error
    errors = []
    if root.tag != _tag(ROOT_ELEMENT):
        errors.append(f"{_path(root)}: the root element must be {ROOT_ELEMENT} "
                      f"in namespace {B2MML_NAMESPACE}")
    resource = xmlschema.XMLResource(root.getroottree(), allow="none", defuse="always")
    for error in schema.iter_errors(resource):
        element = error.elem
        where = (f"{_path(element)} (line {element.sourceline})"
                 if isinstance(element, etree._Element) else error.path or "/")
        errors.append(f"{where}: {_readable(error.reason or error.message)}")
    if errors:
        raise B2mmlInvalid(errors)


def _path(element) -> str:
    """`/Root/Child[2]/Leaf`: local names, with the position where a name repeats."""
    steps = []
    while element is not None:
        name = _readable(element.tag) if isinstance(element.tag, str) else "node()"
        parent = element.getparent()
        if parent is not None:
            same = [sibling for sibling in parent if sibling.tag == element.tag]
            if len(same) > 1:
                name += f"[{same.index(element) + 1}]"
        steps.append(name)
        element = parent
    return "/" + "/".join(reversed(steps))


def _readable(text: str) -> str:
    return text.replace(f"{{{B2MML_NAMESPACE}}}", "")


def document_file_name(site_code: str, production_date: date, batch: str | None = None) -> str:
    """`ProcessOperationsPerformance_<site>_<YYYY-MM-DD>[_<batch>].xml`."""
    if not SAFE_FILE_PART.fullmatch(site_code):
        raise ValueError(f"site code {site_code!r} cannot be part of a file name")
    if batch is not None and not SAFE_FILE_PART.fullmatch(batch):
        raise ValueError(f"batch {batch!r} cannot be part of a file name")
    return f"{ROOT_ELEMENT}_{site_code}_{production_date.isoformat()}" + (
        f"_{batch}.xml" if batch is not None else ".xml")


def write_documents(
    confirmations: Iterable[Mapping[str, Any]], out_dir: Path, *, created_at: datetime,
    batch: str | None = None,
) -> list[Path]:
    """One validated document per site and production day in `out_dir`, each written atomically.

    The BODID is `<site>-<YYYYMMDD>-<created_at, UTC, YYYYMMDDTHHMMSSZ>`, so a retry with the same
    rows and `created_at` rewrites the same bytes. A `batch` (the writer's name for this set of
    rows) is appended to the BODID and the file name, so documents of different batches for the
    same site and day never replace each other. Returns the paths, sorted by site and day; no
    confirmations, no files.
    """
    if created_at.utcoffset() is None:
        raise ValueError(f"created_at must be timezone-aware, not {created_at!r}")
    groups: dict[tuple[str, date], list[Confirmation]] = {}
    for row in confirmations:
        confirmation = Confirmation.from_row(row)
        groups.setdefault((confirmation.site_code, confirmation.production_date), []).append(
            confirmation)
    stamp = created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    documents = []
    for (site_code, production_date), rows in sorted(groups.items()):
        name = document_file_name(site_code, production_date, batch)
        document = production_performance_document(
            rows, document_id=f"{site_code}-{production_date:%Y%m%d}-{stamp}"
                              + (f"-{batch}" if batch is not None else ""),
            created_at=created_at, site_code=site_code)
        validate(document)
        documents.append((name, document))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, document in documents:
        path = out_dir / name
        _write_atomically(path, document)
        paths.append(path)
    return paths


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
