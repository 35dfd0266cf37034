with source as (
    select * from {{ source_or_empty('erp', 'production_orders') }}
),

latest as (
    select distinct on (order_number) *
    from source
    order by order_number asc, _extracted_at desc
),

renamed as (
    select
        order_number,
        plant_code as site_code,
        material_number,
        line_code,
        planned_qty::bigint as planned_count,
        upper(coalesce(unit, 'PCS')) as quantity_unit,
        due_date,
        released_at_utc as released_at,
        released_at as released_at_local,
        sales_order_number,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
