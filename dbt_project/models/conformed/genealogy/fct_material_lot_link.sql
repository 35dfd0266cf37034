{#- ISA-95 material lot genealogy: one edge per MES consumption, consumed lot → produced lot,
    both materials mapped to ERP numbers through the cross-reference; quantity in kg or PCS
    (g converted in staging). Consumptions whose item code the cross-reference does not
    resolve (e.g. RM-XX-999) are no edge: they are reported in rpt_unmapped_material_codes. -#}
with consumptions as (
    select * from {{ ref('stg_mes__material_consumptions') }}
),

produced_lots as (
    select * from {{ ref('stg_mes__produced_lots') }}
),

mes_codes as (
    select * from {{ ref('int_material_code_map') }}
    where source_system = 'MES'
),

final as (
    select
        consumptions.consumption_id,
        consumptions.lot_id as consumed_lot_id,
        consumptions.produced_lot_id,
        consumed_material.material_number as consumed_material_number,
        produced_material.material_number as produced_material_number,
        consumptions.consumed_quantity,
        consumptions.quantity_unit,
        consumptions.machine_code,
        consumptions.work_order_id,
        consumptions.operation_id,
        consumptions.confirmation_id,
        consumptions.consumed_at,
        produced_lots.produced_at,
        produced_lots.produced_count
    from consumptions
    inner join produced_lots on produced_lots.lot_id = consumptions.produced_lot_id
    inner join mes_codes as consumed_material on consumed_material.external_code = consumptions.item_code
    inner join mes_codes as produced_material on produced_material.external_code = produced_lots.item_code
)

select * from final
