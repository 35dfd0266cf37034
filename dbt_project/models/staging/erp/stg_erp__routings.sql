with source as (
    select * from {{ source_or_empty('erp', 'routings') }}
),

latest as (
    select distinct on (material_number, line_code, machine_code) *
    from source
    order by material_number asc, line_code asc, machine_code asc, _extracted_at desc
),

renamed as (
    select
        material_number,
        line_code,
        machine_code,
        operation_seq::integer as operation_seq,
        ideal_cycle_seconds::numeric as ideal_cycle_time_seconds,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
