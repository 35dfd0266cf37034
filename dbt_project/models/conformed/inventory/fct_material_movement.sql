{#- ISA-95 material movements from the WMS, one row per movement, with the material mapped to
    the ERP number (ERP numbers as sent; legacy L-<number> codes through the cross-reference).
    Unresolved codes stay with a null material_number and are listed in
    rpt_unmapped_material_codes. stock_effect_quantity: + receipt, − issue, 0 otherwise. -#}
with movements as (
    select * from {{ ref('stg_wms__movements') }}
),

codes as (
    select * from {{ ref('int_material_code_map') }}
    where source_system in ('ERP', 'WMS_LEGACY')
),

final as (
    select
        movements.movement_id,
        movements.movement_type,
        movements.site_code,
        codes.material_number,
        movements.source_material_code,
        codes.source_system = 'WMS_LEGACY' as is_legacy_code,
        movements.material_description,
        movements.lot_id,
        movements.movement_quantity,
        movements.quantity_unit,
        case movements.movement_type
            when 'RECEIPT' then movements.movement_quantity
            when 'ISSUE' then -movements.movement_quantity
            else 0
        end as stock_effect_quantity,
        movements.from_location_code,
        movements.to_location_code,
        movements.reference_number,
        movements.movement_at,
        movements.movement_date,
        movements.source_file_name
    from movements
    left join codes on codes.external_code = movements.source_material_code
)

select * from final
