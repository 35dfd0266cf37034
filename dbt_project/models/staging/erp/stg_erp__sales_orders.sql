with source as (
    select * from {{ source_or_empty('erp', 'sales_orders') }}
),

latest as (
    select distinct on (sales_order_number) *
    from source
    order by sales_order_number asc, _extracted_at desc
),

renamed as (
    select
        sales_order_number,
        customer_number,
        material_number,
        order_qty::numeric as order_quantity,
        upper(coalesce(unit, 'PCS')) as quantity_unit,
        requested_date,
        created_at_utc as created_at,
        created_at as created_at_local,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
