with source as (
    select * from {{ source_or_empty('mqtt', 'messages') }}
    where kind = 'counter'
),

renamed as (
    select
        message_id,
        machine_code,
        payload ->> 'counter' as counter,
        (payload ->> 'value')::bigint as value,  -- noqa: RF04
        -- the event's own pieces: a message per piece, so late or out-of-order arrivals
        -- count the same (the plant's counters are cumulative and never roll over on MQTT)
        (payload ->> 'increment')::bigint as increment,  -- noqa: RF04
        false as is_counter_reset,
        (payload ->> 'total')::bigint as total_value,
        nullif(payload ->> 'operation_id', '') as operation_id,
        event_time as changed_at,
        'good'::text as status,
        'mqtt'::text as signal_path,
        received_at
    from source
)

select * from renamed
