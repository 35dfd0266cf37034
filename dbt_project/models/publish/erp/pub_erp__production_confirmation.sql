{#- What the ERP should hold as production confirmations: one message per MES confirmation
    (operation × shift segment) with good, scrap and rework quantities and times, against the
    ERP production order and material. `erp_payload` is the message body exactly as posted;
    `content_hash` tells the publisher whether a posted confirmation changed (then it posts a
    reversal and the new version). -#}
with confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
),

work_orders as (
    select
        work_order_id,
        erp_order_number
    from {{ ref('stg_mes__work_orders') }}
),

material_codes as (
    select
        external_code,
        material_number
    from {{ ref('int_material_code_map') }}
    where source_system = 'MES'
),

joined as (
    select
        confirmations.confirmation_id as confirmation_key,
        confirmations.operation_id,
        work_orders.erp_order_number as order_number,
        material_codes.material_number,
        confirmations.site_code,
        confirmations.line_code,
        confirmations.machine_code,
        confirmations.production_date,
        confirmations.shift_code,
        confirmations.confirmation_start_at as started_at,
        confirmations.confirmation_end_at as ended_at,
        confirmations.good_count::numeric as good_qty,
        confirmations.scrap_count::numeric as scrap_qty,
        confirmations.rework_count::numeric as rework_qty,
        'PCE'::text as uom,
        extract(
            epoch from confirmations.confirmation_end_at
            - confirmations.confirmation_start_at
        )::bigint as run_seconds
    from confirmations
    left join work_orders on work_orders.work_order_id = confirmations.work_order_id
    left join material_codes on material_codes.external_code = confirmations.item_code
),

final as (
    select
        'production_confirmation'::text as message_type,
        joined.confirmation_key as business_key,
        joined.*,
        jsonb_build_object(
            'confirmation_id', joined.confirmation_key,
            'operation_id', joined.operation_id,
            'order_number', joined.order_number,
            'material_number', joined.material_number,
            'machine_code', joined.machine_code,
            'yield_qty', joined.good_qty,
            'scrap_qty', joined.scrap_qty,
            'rework_qty', joined.rework_qty,
            'unit', joined.uom,
            'started_at', to_char(joined.started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            'ended_at', to_char(joined.ended_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        ) as erp_payload
    from joined
)

select
    final.*,
    md5(final.erp_payload::text) as content_hash
from final
