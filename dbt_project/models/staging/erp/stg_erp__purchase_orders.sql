with source as (
    select * from {{ source_or_empty('erp', 'purchase_orders') }}
),

latest as (
    select distinct on (po_number) *
    from source
    order by po_number asc, _extracted_at desc
),

renamed as (
    select
        po_number as purchase_order_number,
        plant_code as site_code,
        vendor_name,
        material_number,
        case lower(unit) when 'g' then order_qty / 1000 else order_qty end::numeric as order_quantity,
        case lower(unit) when 'g' then 'kg' when 'kg' then 'kg' else upper(unit) end as quantity_unit,
        delivery_date,
        ordered_at_utc as ordered_at,
        ordered_at as ordered_at_local,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
