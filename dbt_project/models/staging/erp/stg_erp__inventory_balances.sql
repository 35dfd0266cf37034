with source as (
    select * from {{ source_or_empty('erp', 'inventory_balances') }}
),

latest as (
    select distinct on (plant_code, material_number, balance_date) *
    from source
    order by plant_code asc, material_number asc, balance_date asc, _extracted_at desc
),

renamed as (
    select
        plant_code as site_code,
        material_number,
        balance_date,
        case lower(unit) when 'g' then qty / 1000 else qty end::numeric as book_quantity,
        case lower(unit) when 'g' then 'kg' when 'kg' then 'kg' else upper(unit) end as quantity_unit,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
