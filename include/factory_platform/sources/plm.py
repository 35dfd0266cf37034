"""PLM: daily XML exports — items, BOM revisions, engineering change orders (see the plant's
PLM docs).

One file per production date (`PLM_EXPORT_<site>_<YYYYMMDD>.xml`, 05:00 local): the first is a
full export, later ones deltas (new BOM revisions with their ECO). UTF-8, no DTD; parsed with
entity resolution and network access off. Every export is kept (the natural keys include
`exported_at`); staging picks the latest version.
"""

from datetime import timedelta

from factory_platform.extract.fields import Field as F
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
