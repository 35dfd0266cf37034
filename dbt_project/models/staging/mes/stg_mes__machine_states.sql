with source as (
    select * from {{ source_or_empty('mes', 'machine_states') }}
),

latest as (
    select distinct on (state_id) *
    from source
    order by state_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        state_id,
        site_code,
        line_code,
        machine_code,
        state as machine_state,
        reason_code,
        reason_text_en,
        reason_text_zh,
        operation_id,
        start_at as state_start_at,
        end_at as state_end_at,
        extract(epoch from end_at - start_at)::bigint as duration_seconds,
        production_date as source_production_date,
        shift_code as source_shift_code,
        updated_at as recorded_at
    from latest
)

select * from renamed
