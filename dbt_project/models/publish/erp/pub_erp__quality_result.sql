{#- What the ERP should hold as quality results: the QMS usage decision of every inspection
    lot of a produced lot (accept / reject / rework), one message per inspection lot. -#}
with decisions as (
    select * from {{ ref('stg_qms__usage_decisions') }}
),

inspection_lots as (
    select * from {{ ref('stg_qms__inspection_lots') }}
),

produced_lots as (
    select
        lot_id,
        work_order_id,
        confirmation_id
    from {{ ref('stg_mes__produced_lots') }}
),

confirmations as (
    select
        confirmation_id,
        production_date
    from {{ ref('fct_operation_confirmation') }}
),

work_orders as (
    select
        work_order_id,
        erp_order_number
    from {{ ref('stg_mes__work_orders') }}
),

latest_decision as (
    select distinct on (inspection_lot_id) *
    from decisions
    order by inspection_lot_id asc, recorded_at desc, usage_decision_id desc
),

final as (
    select
        'quality_result'::text as message_type,
        inspection_lots.inspection_lot_id as business_key,
        inspection_lots.inspection_lot_id,
        inspection_lots.lot_id,
        inspection_lots.material_number,
        inspection_lots.site_code,
        confirmations.production_date,
        work_orders.erp_order_number as order_number,
        latest_decision.usage_decision,
        latest_decision.usage_decision_id,
        jsonb_build_object(
            'inspection_lot_id', inspection_lots.inspection_lot_id,
            'lot_id', inspection_lots.lot_id,
            'material_number', inspection_lots.material_number,
            'usage_decision', latest_decision.usage_decision,
            'order_number', work_orders.erp_order_number
        ) as erp_payload
    from latest_decision
    inner join inspection_lots
        on inspection_lots.inspection_lot_id = latest_decision.inspection_lot_id
    left join produced_lots on produced_lots.lot_id = inspection_lots.lot_id
    left join confirmations on confirmations.confirmation_id = produced_lots.confirmation_id
    left join work_orders on work_orders.work_order_id = produced_lots.work_order_id
)

select
    final.*,
    md5(final.erp_payload::text) as content_hash
from final
