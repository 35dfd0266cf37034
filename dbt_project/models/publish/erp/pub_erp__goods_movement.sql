{#- What the ERP should hold as goods movements from production: every lot a confirmation
    consumed (goods issue to the order) and every lot it produced (goods receipt of the
    finished material), one message each. -#}
with consumptions as (
    select * from {{ ref('fct_material_lot_link') }}
),

produced_lots as (
    select * from {{ ref('stg_mes__produced_lots') }}
),

confirmations as (
    select
        confirmation_id,
        site_code,
        production_date
    from {{ ref('fct_operation_confirmation') }}
),

work_orders as (
    select
        work_order_id,
        erp_order_number,
        site_code
    from {{ ref('stg_mes__work_orders') }}
),

material_codes as (
    select
        external_code,
        material_number
    from {{ ref('int_material_code_map') }}
    where source_system = 'MES'
),

issues as (
    select
        'GI-' || consumptions.consumption_id as movement_key,
        'goods_issue'::text as movement_type,
        consumptions.consumed_material_number as material_number,
        consumptions.consumed_lot_id as lot_id,
        consumptions.consumed_quantity::numeric as quantity,
        consumptions.quantity_unit as unit,
        consumptions.work_order_id,
        consumptions.confirmation_id,
        consumptions.consumed_at as moved_at
    from consumptions
),

receipts as (
    select
        'GR-' || produced_lots.lot_id as movement_key,
        'goods_receipt'::text as movement_type,
        material_codes.material_number,
        produced_lots.lot_id,
        produced_lots.produced_count::numeric as quantity,
        'PCE'::text as unit,
        produced_lots.work_order_id,
        produced_lots.confirmation_id,
        produced_lots.produced_at as moved_at
    from produced_lots
    left join material_codes on material_codes.external_code = produced_lots.item_code
),

movements as (
    select * from issues
    union all
    select * from receipts
),

{# A movement whose confirmation is unknown (e.g. quarantined) falls in the shift of its own
    time at the work order's site (an equality join on the candidate dates, not a range scan
    of the whole calendar per movement) -#}
unconfirmed as (
    select
        movements.movement_key,
        movements.moved_at,
        work_orders.site_code
    from movements
    inner join work_orders on work_orders.work_order_id = movements.work_order_id
    left join confirmations on confirmations.confirmation_id = movements.confirmation_id
    where confirmations.confirmation_id is null
),

placed as (
    {{ assign_shift('unconfirmed', 'movement_key', 'moved_at') }}
),

final as (
    select
        'goods_movement'::text as message_type,
        movements.movement_key as business_key,
        movements.movement_key,
        movements.movement_type,
        movements.material_number,
        movements.lot_id,
        movements.quantity,
        movements.unit,
        work_orders.erp_order_number as order_number,
        movements.confirmation_id,
        -- scope: the confirmation's, else the shift of the movement's own time
        coalesce(confirmations.site_code, work_orders.site_code) as site_code,
        coalesce(confirmations.production_date, placed.production_date) as production_date,
        movements.moved_at,
        jsonb_build_object(
            'movement_type', movements.movement_type,
            'material_number', movements.material_number,
            'qty', movements.quantity,
            'unit', movements.unit,
            'lot_id', movements.lot_id,
            'order_number', work_orders.erp_order_number,
            'moved_at', to_char(movements.moved_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        ) as erp_payload
    from movements
    left join work_orders on work_orders.work_order_id = movements.work_order_id
    left join confirmations on confirmations.confirmation_id = movements.confirmation_id
    left join placed on placed.movement_key = movements.movement_key
)

select
    final.*,
    md5(final.erp_payload::text) as content_hash
from final
