with source as (
    select * from {{ source_or_empty('erp', 'customers') }}
),

latest as (
    select distinct on (customer_number) *
    from source
    order by customer_number asc, _extracted_at desc
),

renamed as (
    select
        customer_number,
        name_en as customer_name_en,
        name_zh as customer_name_zh,
        country as country_code,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
