with source as (
    select * from {{ source_or_empty('qms', 'characteristics') }}
),

latest as (
    select distinct on (characteristic_id) *
    from source
    order by characteristic_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        characteristic_id,
        material_number,
        characteristic_code,
        name_en as characteristic_name_en,
        name_zh as characteristic_name_zh,
        unit as measurement_unit,
        target::numeric as target_value,
        lower_spec_limit::numeric as lower_spec_limit,
        upper_spec_limit::numeric as upper_spec_limit,
        updated_at as recorded_at
    from latest
)

select * from renamed
