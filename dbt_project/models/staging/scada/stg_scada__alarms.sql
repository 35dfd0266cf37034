with source as (
    select * from {{ source_or_empty('scada', 'alarms') }}
),

latest as (
    select distinct on (machine_code, alarm_code, raised_at) *
    from source
    order by machine_code asc, alarm_code asc, raised_at asc, _extracted_at desc
),

renamed as (
    select
        machine_code,
        alarm_code,
        raised_at,
        cleared_at,
        extract(epoch from cleared_at - raised_at)::double precision as alarm_duration_seconds,
        text_en as alarm_text_en,
        text_zh as alarm_text_zh,
        priority as alarm_priority,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
