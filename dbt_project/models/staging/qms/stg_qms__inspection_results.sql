{#- measured_at stays local here (the result carries no site); fct_inspection_result converts
    it to UTC with the inspection lot's site. -#}
with source as (
    select * from {{ source_or_empty('qms', 'inspection_results') }}
),

latest as (
    select distinct on (result_id) *
    from source
    order by result_id, updated_at desc, _extracted_at desc
),

renamed as (
    select
        result_id,
        inspection_lot_id,
        characteristic_id,
        sample_no::integer as sample_no,
        value::numeric as measured_value,
        unit as measurement_unit,
        in_spec as is_in_spec,
        measured_at as measured_at_local,
        updated_at as recorded_at
    from latest
)

select * from renamed
