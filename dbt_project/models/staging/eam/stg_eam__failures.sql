{#- EAM failures, latest version per failure by version_at (an open failure is superseded when
    it ends); duration in seconds once closed. -#}
with source as (
    select * from {{ source_or_empty('eam', 'failures') }}
),

latest as (
    select distinct on (failure_id) *
    from source
    order by failure_id asc, version_at desc, _extracted_at desc
),

renamed as (
    select
        failure_id,
        equipment_id,
        failure_code,
        failure_text_en,
        failure_text_zh,
        started_at as failure_start_at,
        ended_at as failure_end_at,
        reported_at,
        extract(epoch from ended_at - started_at)::bigint as duration_seconds,
        ended_at is null as is_open,
        version_at as recorded_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
