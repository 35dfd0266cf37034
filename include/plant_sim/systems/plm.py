"""PLM: one XML export per production date (full on the first day, then deltas with ECOs).

UTF-8 XML, no DTD/entities; timestamps local with offset (`exportedAt`), dates plain.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from xml.sax.saxutils import quoteattr


class PlmSystem:
    """Writes `PLM_EXPORT_<site>_<date>.xml` files into the drops."""

    name = "plm"

    def start(self, gen: Any) -> None:
        self.eco_seq = 0

    def _items(self, gen: Any, rev: dict[str, str]) -> list[str]:
        out = ["  <Items>"]
        for p in gen.cfg.products:
            out.append(
                f"    <Item number={quoteattr(p.erp_material)} mesItem={quoteattr(p.mes_item)}"
                f' type="FERT" uom="PCS" revision={quoteattr(rev[p.erp_material])}>'
            )
            out.append(f'      <Name lang="en">{_esc(p.name_en)}</Name>')
            out.append(f'      <Name lang="zh">{_esc(p.name_zh)}</Name>')
            out.append("    </Item>")
        for m in gen.cfg.materials:
            out.append(
                f"    <Item number={quoteattr(m.erp_material)} mesItem={quoteattr(m.mes_item)}"
                f' type="ROH" uom={quoteattr(m.unit)} revision="A">'
            )
            out.append(f'      <Name lang="en">{_esc(m.name_en)}</Name>')
            out.append(f'      <Name lang="zh">{_esc(m.name_zh)}</Name>')
            out.append("    </Item>")
        out.append("  </Items>")
        return out

    def _bom(self, gen: Any, p: Any, rev: str, eff: dt.date) -> list[str]:
        out = [
            (
                f"    <BOM parent={quoteattr(p.erp_material)} revision={quoteattr(rev)}"
                f' effectiveFrom="{eff.isoformat()}">'
            )
        ]
        for b in p.bom:
            unit = gen.cfg.material(b.component).unit
            out.append(
                f'      <Component number={quoteattr(b.component)} qty="{b.qty}"'
                f" uom={quoteattr(unit)}/>"
            )
        out.append("    </BOM>")
        return out

    def day(self, gen: Any, ev: Any) -> None:
        site, day = ev.site, ev.day
        exported = ev.shifts[0].start - 3600
        stamp = dt.datetime.fromtimestamp(exported, site.tz).isoformat()
        full = ev.day_index == 0
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            (
                f'<PLMExport site={quoteattr(site.code)} exportedAt="{stamp}"'
                f' type="{"full" if full else "delta"}">'
            ),
        ]
        revs = {p.erp_material: "A" for p in gen.cfg.products}
        if full:
            lines += self._items(gen, revs)
            lines.append("  <BOMs>")
            for p in gen.cfg.products:
                lines += self._bom(
                    gen, p, "A", gen.cfg.start_date - dt.timedelta(days=30)
                )
            lines.append("  </BOMs>")
        elif ev.day_index % 5 == 0:
            # an ECO: new drawing revision, BOM unchanged in quantities, effective after the range
            p = gen.cfg.products[(ev.day_index // 5 - 1) % len(gen.cfg.products)]
            self.eco_seq += 1
            eco = f"ECO-{site.code}-{self.eco_seq:04d}"
            eff = gen.cfg.start_date + dt.timedelta(days=gen.cfg.days + 7)
            lines.append("  <BOMs>")
            lines += self._bom(gen, p, "B", eff)
            lines.append("  </BOMs>")
            lines.append("  <ECOs>")
            lines.append(
                f'    <ECO number="{eco}" status="released"'
                f' releasedAt="{stamp}" effectiveFrom="{eff.isoformat()}">'
            )
            lines.append(
                f'      <Affected item={quoteattr(p.erp_material)} fromRevision="A"'
                f' toRevision="B"/>'
            )
            lines.append(
                '      <Description lang="en">Drawing update: chamfer note</Description>'
            )
            lines.append(
                '      <Description lang="zh">图纸更新：倒角说明</Description>'
            )
            lines.append("    </ECO>")
            lines.append("  </ECOs>")
        lines.append("</PLMExport>")
        name = f"PLM_EXPORT_{site.code}_{day.strftime('%Y%m%d')}.xml"
        gen.drops.path("plm", name).write_text(
            "\n".join(lines) + "\n", encoding="utf-8"
        )
        gen.drops.register("plm", name, exported + 600)

    def finish(self, gen: Any) -> None:
        return None


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
