{#- Quantities in SI units: mass in kg (the MES sometimes sends g), pieces as pieces. -#}
with source as (
    select * from {{ source_or_empty('mes', 'material_consumptions') }}
),

latest as (
    select distinct on (consumption_id) *
    from source
    order by consumption_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        consumption_id,
        operation_id,
        work_order_id,
        confirmation_id,
        machine_code,
        item_code,
        lot_id,
        case lower(unit)
            when 'g' then qty / 1000
            else qty
        end::numeric as consumed_quantity,
        case lower(unit)
            when 'g' then 'kg'
            when 'kg' then 'kg'
            else upper(unit)
        end as quantity_unit,
        unit as source_unit,
        consumed_at,
        produced_lot_id,
        updated_at as recorded_at
    from latest
)

select * from renamed
