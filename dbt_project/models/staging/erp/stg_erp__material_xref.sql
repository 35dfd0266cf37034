with source as (
    select * from {{ source_or_empty('erp', 'material_xref') }}
),

latest as (
    select distinct on (system, external_code) *
    from source
    order by system asc, external_code asc, _extracted_at desc
),

renamed as (
    select
        upper(system) as source_system,
        external_code,
        material_number,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
