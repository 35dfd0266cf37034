"""
### extract_plm — PLM XML exports into `raw_plm.*`

Daily (06:00 UTC data intervals) the PLM exports in the inbox of connection `plm_drops` are
parsed — with entity resolution, DTD loading and network access off — into `raw_plm.items`,
`raw_plm.bom_lines` (one row per BOM component) and `raw_plm.ecos`. A 2-day lookback catches
late exports.

* **Idempotent:** a batch replaces exactly the rows of the files it read; each export is kept
  (keys include `exported_at`), staging takes the latest.
* **Nothing lost:** a file that is not well-formed XML moves to `quarantine/` with a reason and
  is recorded in `ops.quarantine`; a file moves to `archive/` once all three entities loaded it.

* **Assets:** each raw table is an Airflow asset; `transform_dbt` runs when they update.

Client: `include/factory_platform/extract/plm_xml.py` (README_files.md); registry entry:
`include/factory_platform/sources/plm.py`.

PLM: daily XML exports — items, BOM revisions, engineering change orders (see the plant's
PLM docs).

One file per production date (`PLM_EXPORT_<site>_<YYYYMMDD>.xml`, 05:00 local): the first is a
full export, later ones deltas (new BOM revisions with their ECO). UTF-8, no DTD; parsed with
entity resolution and network access off. Every export is kept (the natural keys include
`exported_at`); staging picks the latest version.
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.sources import Entity, Source

_EXPORT = (F("site", required=True), F("exported_at", "timestamptz", required=True),
           F("export_type"))
_FILES = r"PLM_EXPORT_[A-Z0-9]+_(?P<day>\d{8})\.xml"

SOURCE = Source(
    system="plm",
    title="PLM — items, BOM revisions and engineering change orders",
    interface="xml_drop",
    conn_id="plm_drops",
    schedule_cron="0 6 * * *",
    change_feed="inbox",  # a settled file in the inbox starts a run (change_triggers)
    lookback=timedelta(days=2),
    entities=(
        Entity(
            name="items", endpoint=_FILES, natural_key=("number", "revision", "exported_at"),
            cursor=None, options=(("record", "item"),),
            description="Items (ERP number, MES item code, type, unit, revision, names en/zh).",
            fields=(
                *_EXPORT, F("number", required=True), F("mes_item"), F("item_type"), F("uom"),
                F("revision", required=True), F("name_en"), F("name_zh"),
            ),
        ),
        Entity(
            name="bom_lines", endpoint=_FILES,
            natural_key=("parent_number", "bom_revision", "component_number", "exported_at"),
            cursor=None, options=(("record", "bom_line"),),
            description="BOM revisions, one row per component line.",
            fields=(
                *_EXPORT, F("parent_number", required=True), F("bom_revision", required=True),
                F("effective_from", "date"), F("component_number", required=True),
                F("qty", "numeric", required=True, minimum=0), F("uom"),
            ),
        ),
        Entity(
            name="ecos", endpoint=_FILES, natural_key=("eco_number", "exported_at"),
            cursor=None, options=(("record", "eco"),),
            description="Engineering change orders with the revisions they change.",
            fields=(
                *_EXPORT, F("eco_number", required=True), F("status"),
                F("released_at", "timestamptz"), F("effective_from", "date"),
                F("affected", "json"), F("description_en"), F("description_zh"),
            ),
        ),
    ),
)
