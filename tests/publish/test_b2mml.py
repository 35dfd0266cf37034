"""B2MML production confirmations: documents valid under the real V0700 XSDs, every value read
back exactly (Decimal quantities, UTC times around the DST change), broken documents rejected with
the element named, byte-identical output, one file per site and production day."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from factory_platform import b2mml
from lxml import etree

BERLIN = ZoneInfo("Europe/Berlin")
NS = {"b": b2mml.B2MML_NAMESPACE}
CREATED_AT = datetime(2025, 3, 31, 4, 0, tzinfo=UTC)
INCLUDE_DIR = Path(__file__).resolve().parents[2] / "include"


def confirmation(key: str, order: str, started_at: datetime, run: timedelta, *,
                 good: Decimal | int, scrap: Decimal | int = 0, rework: Decimal | int = 0,
                 site: str = "ERF", line: str = "ERF-L1", machine: str = "ERF-L1-M01",
                 material: str = "4000123", day: date | None = None, shift: str = "N",
                 operation: str = "0010", version: int = 1, uom: str = "PCE") -> dict:
    return {
        "confirmation_key": key, "posting_version": version, "order_number": order,
        "operation_id": operation, "site_code": site, "line_code": line, "machine_code": machine,
        "material_code": material, "production_date": day or started_at.date(),
        "shift_code": shift, "started_at": started_at, "ended_at": started_at + run,
        "good_qty": good, "scrap_qty": scrap, "rework_qty": rework, "uom": uom,
        "run_seconds": int(run.total_seconds()),
    }


# 30 March 2025 is the DST change in Germany: 02:00 CET becomes 03:00 CEST (01:00 UTC).
DST_DAY = date(2025, 3, 30)
ERF_DST_DAY = [
    # the night shift runs through the switch: 00:30-02:30 UTC is 01:30 CET to 04:30 CEST
    confirmation("C-000123", "1000123", datetime(2025, 3, 30, 0, 30, tzinfo=UTC),
                 timedelta(hours=2), good=Decimal("118.500"), scrap=Decimal("1.250"),
                 rework=Decimal("0.25")),
    # the same order's next operation, on another machine, given in local time (CEST)
    confirmation("C-000124", "1000123", datetime(2025, 3, 30, 4, 45, 10, 250000, tzinfo=BERLIN),
                 timedelta(minutes=95), good=240, scrap=3, operation="0020",
                 machine="ERF-L1-M02", shift="F"),
    # a second order with quantities a float could not hold
    confirmation("C-000125", "1000124", datetime(2025, 3, 30, 1, 59, 59, tzinfo=UTC),
                 timedelta(seconds=1), good=Decimal("1234567890.123456789"),
                 scrap=Decimal("0.1"), rework=Decimal("0.2"), line="ERF-L2",
                 machine="ERF-L2-M01", material="4000777", uom="KGM", version=3),
    # a third order; its confirmation was posted before the one above, in the previous shift
    confirmation("C-000099", "1000099", datetime(2025, 3, 29, 22, 0, tzinfo=UTC),
                 timedelta(hours=1, minutes=30), good=Decimal(0), scrap=Decimal(7),
                 day=DST_DAY, line="ERF-L3", machine="ERF-L3-M04", version=2),
]


def build(rows=ERF_DST_DAY, **overrides) -> bytes:
    arguments = {"document_id": "ERF-20250330-1", "created_at": CREATED_AT, "site_code": "ERF"}
    return b2mml.production_performance_document(rows, **{**arguments, **overrides})


def one(element, path: str):
    found = element.xpath(path, namespaces=NS)
    assert len(found) == 1, (path, found)
    return found[0]


def text(element, path: str) -> str:
    return one(element, path).text


def read_back(document: bytes) -> dict[str, dict]:
    """Every confirmation as the receiver reads it from the document, by confirmation key."""
    root = etree.fromstring(document)
    found = {}
    for response in root.xpath("b:DataArea/b:OperationsPerformance/b:OperationsResponse",
                               namespaces=NS):
        for segment in response.xpath("b:SegmentResponse", namespaces=NS):
            quantities = {
                text(quantity, "b:Key"): (Decimal(text(quantity, "b:QuantityString")),
                                          text(quantity, "b:QuantityString"),
                                          text(quantity, "b:UnitOfMeasure"),
                                          text(quantity, "b:DataType"))
                for quantity in segment.xpath("b:MaterialActual/b:Quantity", namespaces=NS)
            }
            data = {text(item, "b:ID"): text(item, "b:Value/b:ValueString")
                    for item in segment.xpath("b:SegmentData", namespaces=NS)}
            scope = "b:HierarchyScope"
            found[text(segment, "b:ID")] = {
                "order_number": text(response, "b:ID"),
                "request_id": text(segment, "b:OperationsRequestID"),
                "operation_id": text(segment, "b:SegmentRequirementID"),
                "site_code": text(segment, f"{scope}/b:EquipmentID"),
                "site_level": text(segment, f"{scope}/b:EquipmentLevel"),
                "line_code": text(segment, f"{scope}/b:HierarchyScopeChild/b:EquipmentID"),
                "line_level": text(segment, f"{scope}/b:HierarchyScopeChild/b:EquipmentLevel"),
                "machine_code": text(segment, "b:EquipmentActual/b:EquipmentID"),
                "run_seconds": int(text(segment, "b:EquipmentActual/b:EquipmentActualProperty"
                                                 "[b:ID='run_seconds']/b:Value/b:ValueString")),
                "material_code": text(segment, "b:MaterialActual/b:MaterialDefinitionID"),
                "material_use": text(segment, "b:MaterialActual/b:MaterialUse"),
                "started_at": datetime.fromisoformat(text(segment, "b:ActualStartTime")),
                "ended_at": datetime.fromisoformat(text(segment, "b:ActualEndTime")),
                "started_text": text(segment, "b:ActualStartTime"),
                "quantities": quantities,
                "posting_version": int(data["posting_version"]),
                "production_date": date.fromisoformat(data["production_date"]),
                "shift_code": data["shift_code"],
            }
    return found


def test_document_is_valid_under_the_v0700_schemas():
    document = build()
    b2mml.validate(document)
    # and libxml2, a second validator, agrees
    schema = etree.XMLSchema(etree.parse(str(b2mml.xsd_dir() / b2mml.ENTRY_XSD)))
    assert schema.validate(etree.fromstring(document)), schema.error_log


def test_document_frame():
    document = build(sender="mes-erf")
    assert document.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n")
    root = etree.fromstring(document)
    assert root.tag == f"{{{b2mml.B2MML_NAMESPACE}}}ProcessOperationsPerformance"
    assert root.nsmap == {None: "http://www.mesa.org/xml/B2MML"}
    assert root.get("releaseID") == "V0700"
    assert b2mml.ATTRIBUTION in root.getprevious().text
    assert text(root, "b:ApplicationArea/b:Sender/b:LogicalID") == "mes-erf"
    assert text(root, "b:ApplicationArea/b:CreationDateTime") == "2025-03-31T04:00:00Z"
    assert text(root, "b:ApplicationArea/b:BODID") == "ERF-20250330-1"
    assert one(root, "b:DataArea/*[1]").tag == f"{{{b2mml.B2MML_NAMESPACE}}}Process"
    performance = one(root, "b:DataArea/b:OperationsPerformance")
    assert text(performance, "b:ID") == "ERF-20250330-1"
    assert text(performance, "b:OperationsType") == "Production"
    assert text(performance, "b:HierarchyScope/b:EquipmentID") == "ERF"
    assert text(performance, "b:StartTime") == "2025-03-29T22:00:00Z"
    assert text(performance, "b:Endtime") == "2025-03-30T04:20:10.250000Z"  # V0700's spelling
    responses = performance.xpath("b:OperationsResponse", namespaces=NS)
    assert [text(r, "b:ID") for r in responses] == ["1000099", "1000123", "1000124"]
    assert [text(r, "b:OperationsRequestID") for r in responses] == ["1000099", "1000123",
                                                                     "1000124"]
    order = responses[1]
    assert [text(s, "b:ID") for s in order.xpath("b:SegmentResponse", namespaces=NS)] == [
        "C-000123", "C-000124"]
    assert text(order, "b:StartTime") == "2025-03-30T00:30:00Z"
    assert text(order, "b:EndTime") == "2025-03-30T04:20:10.250000Z"


def test_every_value_reads_back_exactly():
    found = read_back(build())
    assert set(found) == {row["confirmation_key"] for row in ERF_DST_DAY}
    for row in ERF_DST_DAY:
        back = found[row["confirmation_key"]]
        for field in ("order_number", "operation_id", "site_code", "line_code", "machine_code",
                      "material_code", "posting_version", "production_date", "shift_code",
                      "run_seconds", "started_at", "ended_at"):
            assert back[field] == row[field], (row["confirmation_key"], field)
        assert back["request_id"] == row["order_number"]
        assert (back["site_level"], back["line_level"]) == ("Site", "ProductionLine")
        assert back["material_use"] == "Produced"
        assert back["started_at"].utcoffset() == timedelta(0)
        for key in ("good", "scrap", "rework"):
            value, written, uom, data_type = back["quantities"][key]
            assert value == row[f"{key}_qty"]
            assert written == b2mml.decimal_text(row[f"{key}_qty"])
            assert (uom, data_type) == (row["uom"], "decimal")
        assert list(back["quantities"]) == ["good", "scrap", "rework"]

    # the decimal text is exactly the input's, trailing zeros included, no float on the way
    quantities = found["C-000125"]["quantities"]
    assert quantities["good"][1] == "1234567890.123456789"
    assert (quantities["scrap"][1], quantities["rework"][1]) == ("0.1", "0.2")
    assert found["C-000123"]["quantities"]["good"][1] == "118.500"
    assert found["C-000124"]["quantities"]["scrap"][1] == "3"
    # times across the DST switch: UTC instants, a local (CEST) input converted
    assert found["C-000123"]["started_text"] == "2025-03-30T00:30:00Z"
    assert found["C-000123"]["ended_at"] == datetime(2025, 3, 30, 2, 30, tzinfo=UTC)
    assert found["C-000124"]["started_text"] == "2025-03-30T02:45:10.250000Z"
    assert found["C-000099"]["production_date"] == DST_DAY


def test_quantity_text_has_no_exponent():
    assert b2mml.decimal_text(Decimal("1E+2")) == "100"
    assert b2mml.decimal_text(Decimal("1.50E-7")) == "0.000000150"
    assert b2mml.decimal_text(Decimal("-0.00")) == "0.00"
    assert b2mml.decimal_text(17) == "17"


def test_output_is_deterministic():
    first = build()
    shuffled = list(ERF_DST_DAY)
    random.Random(7).shuffle(shuffled)
    assert shuffled != ERF_DST_DAY
    assert build(shuffled) == first
    assert build() == first


def _remove(path: str):
    def mutate(root):
        element = one(root, path)
        element.getparent().remove(element)
    return mutate


def _set_text(path: str, value: str):
    def mutate(root):
        one(root, path).text = value
    return mutate


SEGMENT = "b:DataArea/b:OperationsPerformance/b:OperationsResponse[2]/b:SegmentResponse[1]"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(_remove(f"{SEGMENT}/b:ID"),
                     "OperationsResponse[2]/SegmentResponse[1]", id="segment-id-removed"),
        pytest.param(_remove("b:ApplicationArea/b:CreationDateTime"),
                     "ApplicationArea (line 2): Unexpected child with tag 'BODID' at position 2. "
                     "Tag 'CreationDateTime' expected", id="creation-time-removed"),
        pytest.param(_set_text(f"{SEGMENT}/b:ActualStartTime", "2025-02-30T00:30:00Z"),
                     "SegmentResponse[1]/ActualStartTime", id="impossible-date"),
        pytest.param(_set_text(f"{SEGMENT}/b:ActualEndTime", "30.03.2025 02:30"),
                     "SegmentResponse[1]/ActualEndTime", id="not-a-datetime"),
        pytest.param(_set_text(f"{SEGMENT}/b:OperationsType", "Assembly"),
                     "SegmentResponse[1]/OperationsType", id="not-an-operations-type"),
    ],
)
def test_broken_document_is_rejected_naming_the_element(mutate, expected):
    root = etree.fromstring(build())
    mutate(root)
    with pytest.raises(b2mml.B2mmlInvalid) as raised:
        b2mml.validate(etree.tostring(root))
    assert expected in str(raised.value)
    assert raised.value.errors
    assert "(line " in raised.value.errors[0]


def test_missing_element_is_named():
    root = etree.fromstring(build())
    element = one(root, f"{SEGMENT}/b:ID")
    element.getparent().remove(element)
    with pytest.raises(b2mml.B2mmlInvalid, match=r"Tag 'ID' expected"):
        b2mml.validate(etree.tostring(root))


def test_other_documents_are_rejected():
    with pytest.raises(b2mml.B2mmlInvalid, match="not well-formed"):
        b2mml.validate(build()[:-40])
    # valid B2MML, but not this BOD
    performance = one(etree.fromstring(build()), "b:DataArea/b:OperationsPerformance")
    with pytest.raises(b2mml.B2mmlInvalid, match="root element must be"):
        b2mml.validate(etree.tostring(performance))
    # the right names in no namespace
    unqualified = build().replace(b' xmlns="http://www.mesa.org/xml/B2MML"', b"")
    with pytest.raises(b2mml.B2mmlInvalid):
        b2mml.validate(unqualified)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("good_qty", 118.5, "Decimal or int"),
        ("scrap_qty", Decimal(-1), "Decimal or int"),
        ("rework_qty", Decimal("NaN"), "Decimal or int"),
        ("started_at", datetime(2025, 3, 30, 0, 30), "timezone-aware"),
        ("production_date", datetime(2025, 3, 30, tzinfo=UTC), "must be a date"),
        ("posting_version", 0, "posting_version must be an int >= 1"),
        ("machine_code", "ERF-L1\nM01", "machine_code"),
        ("ended_at", datetime(2025, 3, 30, 0, 0, tzinfo=UTC), "ends"),
    ],
)
def test_row_breaking_the_contract_is_refused(field, value, message):
    row = {**ERF_DST_DAY[0], field: value}
    with pytest.raises(ValueError, match=message):
        build([row])


def test_inconsistent_input_is_refused():
    with pytest.raises(ValueError, match="lacks"):
        build([{k: v for k, v in ERF_DST_DAY[0].items() if k != "uom"}])
    with pytest.raises(ValueError, match="at least one"):
        build([])
    with pytest.raises(ValueError, match="GTH"):
        build([ERF_DST_DAY[0], {**ERF_DST_DAY[1], "site_code": "GTH"}])
    with pytest.raises(ValueError, match="C-000123"):
        build([ERF_DST_DAY[0], {**ERF_DST_DAY[1], "confirmation_key": "C-000123"}])


def test_write_documents_one_file_per_site_and_day(tmp_path):
    rows = [
        *ERF_DST_DAY,
        confirmation("C-000130", "1000130", datetime(2025, 3, 31, 6, 0, tzinfo=UTC),
                     timedelta(hours=1), good=Decimal("50.5")),
        confirmation("G-000001", "2000001", datetime(2025, 3, 30, 7, 0, tzinfo=UTC),
                     timedelta(hours=8), good=Decimal("999.999"), site="GTH", line="GTH-L1",
                     machine="GTH-L1-M01"),
    ]
    out_dir = tmp_path / "outbox"
    paths = b2mml.write_documents(rows, out_dir, created_at=CREATED_AT)

    assert [path.name for path in paths] == [
        "ProcessOperationsPerformance_ERF_2025-03-30.xml",
        "ProcessOperationsPerformance_ERF_2025-03-31.xml",
        "ProcessOperationsPerformance_GTH_2025-03-30.xml",
    ]
    assert sorted(out_dir.iterdir()) == paths  # no temporary files left behind
    contents = {path.name: path.read_bytes() for path in paths}
    for document in contents.values():
        b2mml.validate(document)
    keys = {name: set(read_back(document)) for name, document in contents.items()}
    assert keys == {
        "ProcessOperationsPerformance_ERF_2025-03-30.xml": {"C-000099", "C-000123", "C-000124",
                                                           "C-000125"},
        "ProcessOperationsPerformance_ERF_2025-03-31.xml": {"C-000130"},
        "ProcessOperationsPerformance_GTH_2025-03-30.xml": {"G-000001"},
    }
    gth = etree.fromstring(contents["ProcessOperationsPerformance_GTH_2025-03-30.xml"])
    assert text(gth, "b:ApplicationArea/b:BODID") == "GTH-20250330-20250331T040000Z"
    assert text(gth, "b:DataArea/b:OperationsPerformance/b:HierarchyScope/b:EquipmentID") == "GTH"
    assert contents["ProcessOperationsPerformance_ERF_2025-03-30.xml"] == build(
        document_id="ERF-20250330-20250331T040000Z")

    # a retry rewrites the same bytes
    assert b2mml.write_documents(list(reversed(rows)), out_dir, created_at=CREATED_AT) == paths
    assert {path.name: path.read_bytes() for path in paths} == contents
    assert b2mml.write_documents([], out_dir, created_at=CREATED_AT) == []


def test_write_documents_writes_nothing_when_a_row_is_bad(tmp_path):
    rows = [ERF_DST_DAY[0], {**ERF_DST_DAY[1], "good_qty": 1.5}]
    with pytest.raises(ValueError, match="good_qty"):
        b2mml.write_documents(rows, tmp_path, created_at=CREATED_AT)
    assert list(tmp_path.iterdir()) == []


def test_import_loads_neither_lxml_nor_xmlschema():
    code = ("import sys, factory_platform.b2mml; "
            "print(sorted(m for m in ('lxml', 'xmlschema') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(INCLUDE_DIR)}, check=True)
    assert result.stdout.strip() == "[]"
