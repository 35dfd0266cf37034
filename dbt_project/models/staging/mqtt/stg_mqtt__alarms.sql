with source as (
    select * from {{ source_or_empty('mqtt', 'messages') }}
    where kind = 'alarm'
),

renamed as (
    select
        message_id,
        machine_code,
        payload ->> 'alarm_code' as alarm_code,
        payload ->> 'priority' as alarm_priority,
        payload ->> 'event' as alarm_event,
        event_time as occurred_at,
        'mqtt'::text as signal_path,
        received_at
    from source
)

select * from renamed
