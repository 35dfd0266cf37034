with source as (
    select * from {{ source_or_empty('erp', 'plants') }}
),

latest as (
    select distinct on (plant_code) *
    from source
    order by plant_code asc, _extracted_at desc
),

renamed as (
    select
        plant_code as site_code,
        name_en as site_name_en,
        name_zh as site_name_zh,
        timezone,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
