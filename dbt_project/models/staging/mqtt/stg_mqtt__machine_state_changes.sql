with source as (
    select * from {{ source_or_empty('mqtt', 'messages') }}
    where kind = 'state'
),

renamed as (
    select
        message_id,
        machine_code,
        payload ->> 'state' as state,
        (payload ->> 'state_code')::integer as state_code,
        nullif(payload ->> 'reason_code', '') as reason_code,
        nullif(payload ->> 'operation_id', '') as operation_id,
        event_time as changed_at,
        'mqtt'::text as signal_path,
        topic,
        received_at
    from source
)

select * from renamed
