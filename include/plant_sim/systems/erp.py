"""ERP: its own Postgres database (`erp`, schema `erp`): master data, orders, inventory, and the
inbound interface for postings from the platform (`erp.post_message`).

ERP timestamps are **site-local `timestamp without time zone`** (the plant's time zone is in
`erp.plants.timezone`); dates are local dates. Every table's CSV carries a hidden `_visible_at`
(UTC) used by `load`/`serve` to make rows appear as the clock passes (live mode).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from plant_sim import rng as rngmod
from plant_sim.systems.wms import legacy_code
from plant_sim.tables import Spec, TableWriter
from plant_sim.timeutil import local_naive

V = ("_visible_at", "timestamptz")

SPEC: Spec = {
    "plants": [
        ("plant_code", "text"),
        ("name_en", "text"),
        ("name_zh", "text"),
        ("timezone", "text"),
        V,
    ],
    "materials": [
        ("material_number", "text"),
        ("material_type", "text"),
        ("name_en", "text"),
        ("name_zh", "text"),
        ("base_unit", "text"),
        V,
    ],
    "material_xref": [
        ("material_number", "text"),
        ("system", "text"),
        ("external_code", "text"),
        V,
    ],
    "boms": [
        ("parent_material", "text"),
        ("bom_revision", "text"),
        ("component_material", "text"),
        ("qty_per", "numeric"),
        ("unit", "text"),
        V,
    ],
    "routings": [
        ("material_number", "text"),
        ("line_code", "text"),
        ("machine_code", "text"),
        ("operation_seq", "integer"),
        ("ideal_cycle_seconds", "numeric"),
        V,
    ],
    "customers": [
        ("customer_number", "text"),
        ("name_en", "text"),
        ("name_zh", "text"),
        ("country", "text"),
        V,
    ],
    "sales_orders": [
        ("sales_order_number", "text"),
        ("customer_number", "text"),
        ("material_number", "text"),
        ("order_qty", "numeric"),
        ("unit", "text"),
        ("requested_date", "date"),
        ("created_at", "timestamp"),
        V,
    ],
    "production_orders": [
        ("order_number", "text"),
        ("plant_code", "text"),
        ("material_number", "text"),
        ("line_code", "text"),
        ("planned_qty", "numeric"),
        ("unit", "text"),
        ("due_date", "date"),
        ("released_at", "timestamp"),
        ("sales_order_number", "text"),
        V,
    ],
    "purchase_orders": [
        ("po_number", "text"),
        ("plant_code", "text"),
        ("vendor_name", "text"),
        ("material_number", "text"),
        ("order_qty", "numeric"),
        ("unit", "text"),
        ("ordered_at", "timestamp"),
        ("delivery_date", "date"),
        V,
    ],
    "inventory_balances": [
        ("plant_code", "text"),
        ("material_number", "text"),
        ("balance_date", "date"),
        ("qty", "numeric"),
        ("unit", "text"),
        V,
    ],
}
KEYS = {
    "plants": "plant_code",
    "materials": "material_number",
    "material_xref": "system, external_code",
    "boms": "parent_material, bom_revision, component_material",
    "routings": "material_number, line_code, machine_code",
    "customers": "customer_number",
    "sales_orders": "sales_order_number",
    "production_orders": "order_number",
    "purchase_orders": "po_number",
    "inventory_balances": "plant_code, material_number, balance_date",
}

INBOUND_SQL = r"""
CREATE SEQUENCE erp.document_number_seq START 5000000001;
CREATE TABLE erp.inbound_postings (
  posting_id bigserial PRIMARY KEY,
  idempotency_key text NOT NULL UNIQUE,
  message_type text NOT NULL,
  payload jsonb NOT NULL,
  status text NOT NULL CHECK (status IN ('accepted', 'rejected')),
  reason text,
  erp_document_number text,
  reversal_of text,
  received_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE erp.inbound_postings IS
  'Inbound interface: every message posted with erp.post_message, with the ERP''s answer '
  '(a transient rejection is not stored: the message was not taken, its key stays unused).';

CREATE TABLE erp.inbound_faults (
  fault_id bigserial PRIMARY KEY,
  reason_code text NOT NULL CHECK (reason_code ~ '^(TRANSIENT|PERMANENT)_[A-Z0-9_]+$'),
  message_type text,
  key_like text,
  order_number text,
  remaining integer CHECK (remaining IS NULL OR remaining >= 0),
  active_until timestamptz,
  note text,
  hits integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE erp.inbound_faults IS
  'Simulator control: make erp.post_message say no on purpose. A row matches a message when '
  'message_type, key_like (a LIKE pattern on the idempotency key) and order_number (the '
  'payload''s) are NULL or match, remaining is NULL or above 0 and active_until is NULL or later '
  'than now. The first matching row (lowest fault_id) answers rejected with its reason_code: '
  'TRANSIENT_* (try again later: nothing stored, the key stays unused) or PERMANENT_* (stored as '
  'rejected, like any other rejection). Each match counts down remaining and counts up hits.';

CREATE FUNCTION erp.post_message(p_key text, p_type text, p_payload jsonb)
RETURNS TABLE (status text, reason text, erp_document_number text, posting_id bigint,
               reason_code text)
LANGUAGE plpgsql AS $$
DECLARE
  prev erp.inbound_postings%ROWTYPE;
  fault erp.inbound_faults%ROWTYPE;
  v_reason text;
  v_code text;
  v_doc text;
  v_rev text;
  v_id bigint;
  v_qty text;
BEGIN
  IF p_key IS NULL OR length(p_key) = 0 THEN
    RETURN QUERY SELECT 'rejected'::text, 'missing idempotency key'::text, NULL::text,
                        NULL::bigint, 'PERMANENT_MISSING_KEY'::text;
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext(p_key));
  SELECT * INTO prev FROM erp.inbound_postings ip WHERE ip.idempotency_key = p_key;
  IF FOUND THEN
    IF prev.payload = p_payload AND prev.message_type = p_type THEN
      RETURN QUERY SELECT 'duplicate'::text,
        ('already received: ' || prev.status || coalesce(' (' || prev.reason || ')', ''))::text,
        prev.erp_document_number, prev.posting_id,
        CASE WHEN prev.status = 'rejected' THEN 'PERMANENT_ALREADY_REJECTED' END::text;
    ELSE
      RETURN QUERY SELECT 'rejected'::text,
        'idempotency key reused with a different message'::text, NULL::text, prev.posting_id,
        'PERMANENT_KEY_REUSED'::text;
    END IF;
    RETURN;
  END IF;

  -- faults injected on purpose (erp.inbound_faults), before any validation
  SELECT * INTO fault FROM erp.inbound_faults f
  WHERE (f.message_type IS NULL OR f.message_type = p_type)
    AND (f.key_like IS NULL OR p_key LIKE f.key_like)
    AND (f.order_number IS NULL OR f.order_number = p_payload->>'order_number')
    AND (f.remaining IS NULL OR f.remaining > 0)
    AND (f.active_until IS NULL OR f.active_until > clock_timestamp())
  ORDER BY f.fault_id LIMIT 1 FOR UPDATE;
  IF FOUND THEN
    UPDATE erp.inbound_faults f SET hits = f.hits + 1,
                                    remaining = CASE WHEN f.remaining IS NULL THEN NULL
                                                     ELSE f.remaining - 1 END
    WHERE f.fault_id = fault.fault_id;
    v_code := fault.reason_code;
    v_reason := coalesce(fault.note, lower(replace(v_code, '_', ' ')));
    IF v_code LIKE 'TRANSIENT\_%' THEN
      -- not taken: nothing stored, the same key may come again
      RETURN QUERY SELECT 'rejected'::text, v_reason, NULL::text, NULL::bigint, v_code;
      RETURN;
    END IF;
  END IF;

  v_rev := p_payload->>'reversal_of';
  IF v_code IS NOT NULL THEN
    NULL;  -- a permanent fault: stored as rejected below
  ELSIF p_type NOT IN ('production_confirmation', 'goods_movement', 'quality_result') THEN
    v_reason := 'unknown message_type ' || coalesce(p_type, 'null');
    v_code := 'PERMANENT_UNKNOWN_MESSAGE_TYPE';
  ELSIF p_payload->>'material_number' IS NULL
        OR NOT EXISTS (SELECT 1 FROM erp.materials m WHERE m.material_number = p_payload->>'material_number') THEN
    v_reason := 'unknown material_number ' || coalesce(p_payload->>'material_number', 'null');
    v_code := 'PERMANENT_UNKNOWN_MATERIAL';
  ELSIF p_type = 'production_confirmation' AND NOT EXISTS (
        SELECT 1 FROM erp.production_orders o WHERE o.order_number = p_payload->>'order_number') THEN
    v_reason := 'unknown order_number ' || coalesce(p_payload->>'order_number', 'null');
    v_code := 'PERMANENT_UNKNOWN_ORDER';
  ELSIF p_type = 'goods_movement' AND coalesce(p_payload->>'movement_type', '') NOT IN
        ('goods_issue', 'goods_receipt', 'scrap') THEN
    v_reason := 'movement_type must be goods_issue, goods_receipt or scrap';
    v_code := 'PERMANENT_INVALID_MOVEMENT_TYPE';
  END IF;
  IF v_reason IS NULL THEN
    FOREACH v_qty IN ARRAY ARRAY['yield_qty', 'scrap_qty', 'rework_qty', 'qty'] LOOP
      IF p_payload ? v_qty AND (jsonb_typeof(p_payload->v_qty) <> 'number'
                                OR (p_payload->>v_qty)::numeric < 0) THEN
        v_reason := v_qty || ' must be a non-negative number';
        v_code := 'PERMANENT_INVALID_QUANTITY';
      END IF;
    END LOOP;
  END IF;
  IF v_reason IS NULL AND v_rev IS NOT NULL THEN
    IF NOT EXISTS (SELECT 1 FROM erp.inbound_postings ip
                   WHERE ip.idempotency_key = v_rev AND ip.status = 'accepted') THEN
      v_reason := 'reversal_of ' || v_rev || ' is not an accepted posting';
      v_code := 'PERMANENT_REVERSAL_OF_UNKNOWN';
    ELSIF EXISTS (SELECT 1 FROM erp.inbound_postings ip
                  WHERE ip.reversal_of = v_rev AND ip.status = 'accepted') THEN
      v_reason := 'posting ' || v_rev || ' is already reversed';
      v_code := 'PERMANENT_ALREADY_REVERSED';
    END IF;
  END IF;
  IF v_reason IS NULL THEN
    v_doc := nextval('erp.document_number_seq')::text;
  END IF;
  INSERT INTO erp.inbound_postings (idempotency_key, message_type, payload, status, reason,
                                    erp_document_number, reversal_of)
  VALUES (p_key, p_type, p_payload, CASE WHEN v_reason IS NULL THEN 'accepted' ELSE 'rejected' END,
          v_reason, v_doc, v_rev)
  RETURNING inbound_postings.posting_id INTO v_id;
  RETURN QUERY SELECT CASE WHEN v_reason IS NULL THEN 'accepted' ELSE 'rejected' END::text,
                      v_reason, v_doc, v_id, v_code;
END;
$$;
COMMENT ON FUNCTION erp.post_message(text, text, jsonb) IS
  'Post one message: answers accepted / duplicate / rejected with a reason, per idempotency key; '
  'reason_code classifies a rejection: TRANSIENT_* (not stored, retry later with the same key) '
  'or PERMANENT_* (stored as rejected, the key is used up).';
"""


class ErpSystem:
    """Writes the ERP tables (`<world>/erp/<table>.csv`)."""

    name = "erp"

    def start(self, gen: Any) -> None:
        gen.erp = self
        self.w = TableWriter(gen.out / "erp", SPEC)
        cfg = gen.cfg
        t0 = (
            min(
                int(
                    dt.datetime(
                        cfg.start_date.year,
                        cfg.start_date.month,
                        cfg.start_date.day,
                        tzinfo=s.tz,
                    ).timestamp()
                )
                for s in cfg.sites
            )
            - 30 * 86400
        )
        self.t_master = t0
        vis = _vis(t0)
        for s in cfg.sites:
            self.w.row(
                "plants",
                {
                    "plant_code": s.code,
                    "name_en": s.name_en,
                    "name_zh": s.name_zh,
                    "timezone": s.timezone,
                    "_visible_at": vis,
                },
            )
        for p in cfg.products:
            self.w.row(
                "materials",
                {
                    "material_number": p.erp_material,
                    "material_type": "FERT",
                    "name_en": p.name_en,
                    "name_zh": p.name_zh,
                    "base_unit": "PCS",
                    "_visible_at": vis,
                },
            )
        for m in cfg.materials:
            self.w.row(
                "materials",
                {
                    "material_number": m.erp_material,
                    "material_type": "ROH",
                    "name_en": m.name_en,
                    "name_zh": m.name_zh,
                    "base_unit": m.unit,
                    "_visible_at": vis,
                },
            )
        for code, mes in [(p.erp_material, p.mes_item) for p in cfg.products] + [
            (m.erp_material, m.mes_item) for m in cfg.materials
        ]:
            self.w.row(
                "material_xref",
                {
                    "material_number": code,
                    "system": "MES",
                    "external_code": mes,
                    "_visible_at": vis,
                },
            )
            self.w.row(
                "material_xref",
                {
                    "material_number": code,
                    "system": "WMS_LEGACY",
                    "external_code": legacy_code(code),
                    "_visible_at": vis,
                },
            )
        for p in cfg.products:
            for b in p.bom:
                self.w.row(
                    "boms",
                    {
                        "parent_material": p.erp_material,
                        "bom_revision": "A",
                        "component_material": b.component,
                        "qty_per": b.qty,
                        "unit": cfg.material(b.component).unit,
                        "_visible_at": vis,
                    },
                )
        for line in cfg.lines:
            for code in line.products:
                p = cfg.product(code)
                for i, m in enumerate(line.machines):
                    self.w.row(
                        "routings",
                        {
                            "material_number": code,
                            "line_code": line.code,
                            "machine_code": m.code,
                            "operation_seq": (i + 1) * 10,
                            "ideal_cycle_seconds": round(
                                p.ideal_cycle_s * m.cycle_factor, 1
                            ),
                            "_visible_at": vis,
                        },
                    )
        self.customers = [
            ("C10001", "Rhein Antriebe GmbH", "莱茵驱动有限公司", "DE"),
            ("C10002", "Shanghai Motion Co.", "上海运动控制有限公司", "CN"),
            ("C10003", "Nordic Pumps AB", "北欧泵业公司", "SE"),
        ]
        for c in self.customers:
            self.w.row(
                "customers",
                {
                    "customer_number": c[0],
                    "name_en": c[1],
                    "name_zh": c[2],
                    "country": c[3],
                    "_visible_at": vis,
                },
            )

    def day(self, gen: Any, ev: Any) -> None:
        tz = ev.site.tz
        r = rngmod.stream(gen.seed, "erp", ev.site.code, ev.day.isoformat())
        for wo in ev.work_orders:
            created = wo.released_at - r.randint(2, 5) * 86400
            so = f"SO{wo.erp_order_number}"
            cust = self.customers[r.randrange(len(self.customers))][0]
            self.w.row(
                "sales_orders",
                {
                    "sales_order_number": so,
                    "customer_number": cust,
                    "material_number": wo.product.erp_material,
                    "order_qty": wo.planned_qty,
                    "unit": "PCS",
                    "requested_date": (wo.due_date + dt.timedelta(days=3)).isoformat(),
                    "created_at": local_naive(created, tz),
                    "_visible_at": _vis(created),
                },
            )
            released = wo.released_at - 300
            self.w.row(
                "production_orders",
                {
                    "order_number": wo.erp_order_number,
                    "plant_code": ev.site.code,
                    "material_number": wo.product.erp_material,
                    "line_code": wo.line.code,
                    "planned_qty": wo.planned_qty,
                    "unit": "PCS",
                    "due_date": wo.due_date.isoformat(),
                    "released_at": local_naive(released, tz),
                    "sales_order_number": so,
                    "_visible_at": _vis(released),
                },
            )
        for rc in ev.receipts:
            ordered = rc.received_at - 3 * 86400
            self.w.row(
                "purchase_orders",
                {
                    "po_number": f"45{rc.receipt_id[-7:]}",
                    "plant_code": ev.site.code,
                    "vendor_name": "华东材料供应有限公司",
                    "material_number": rc.material,
                    "order_qty": rc.qty,
                    "unit": gen.cfg.material(rc.material).unit,
                    "ordered_at": local_naive(ordered, tz),
                    "delivery_date": dt.datetime.fromtimestamp(rc.received_at, tz)
                    .date()
                    .isoformat(),
                    "_visible_at": _vis(ordered),
                },
            )
        self._day_end = ev.shifts[-1].end

    def inventory_balance(self, site: Any, mat: Any, day: dt.date, qty: float) -> None:
        """End-of-day ERP book (after the WMS cycle count)."""
        self.w.row(
            "inventory_balances",
            {
                "plant_code": site.code,
                "material_number": mat.erp_material,
                "balance_date": day.isoformat(),
                "qty": qty,
                "unit": mat.unit,
                "_visible_at": _vis(self._day_end + 3600),
            },
        )

    def finish(self, gen: Any) -> None:
        self.w.close()


def _vis(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def folder(world: Path) -> Path:
    """Where the ERP CSVs live."""
    return world / "erp"
