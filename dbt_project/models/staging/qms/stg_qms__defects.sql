{#- The QMS's own recording time is local wall time; fct_quality_defect converts it to UTC with
    the site of the MES confirmation. recorded_at is the change feed's version time (UTC). -#}
with source as (
    select * from {{ source_or_empty('qms', 'defects') }}
),

latest as (
    select distinct on (defect_record_id) *
    from source
    order by defect_record_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        defect_record_id,
        confirmation_id,
        material_number,
        machine_code,
        defect_code,
        defect_text_en,
        defect_text_zh,
        qty::bigint as defect_count,
        recorded_at as defect_recorded_at_local,
        updated_at as recorded_at
    from latest
)

select * from renamed
