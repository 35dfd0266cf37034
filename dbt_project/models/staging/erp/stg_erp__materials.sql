with source as (
    select * from {{ source_or_empty('erp', 'materials') }}
),

latest as (
    select distinct on (material_number) *
    from source
    order by material_number asc, _extracted_at desc
),

renamed as (
    select
        material_number,
        material_type,
        name_en as material_name_en,
        name_zh as material_name_zh,
        case lower(base_unit) when 'kg' then 'kg' else upper(base_unit) end as base_unit,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
