{#- Machine states read from the PLCs by the Modbus edge collector (MQTT kind `plc`): one row per
    machine and reading at which the state code or the reason code changed (and the machine's
    first reading). A PLC is polled, so a change is seen at the first reading after it: changed_at
    is that reading's PLC clock (whole seconds), at most one poll interval after the change.
    Codes as the PLC documents them (state 1 running … 5 unplanned_downtime; reason 0 none,
    1 NO_ORDER … 9 JAM); a code outside the map gives a null state or reason (kept, tested).
    The PLC knows no MES operation: operation_id is null. -#}
with source as (
    select * from {{ source('mqtt', 'messages') }}
    where kind = 'plc'
),

readings as (
    select
        message_id,
        split_part(topic, '/', 2) as site_code,
        split_part(topic, '/', 4) as line_code,
        machine_code,
        (payload -> 'registers' ->> 'state_code')::integer as state_code,
        (payload -> 'registers' ->> 'reason_code')::integer as reason_number,
        event_time as changed_at
    from source
),

with_previous as (
    select
        readings.*,
        lag(readings.state_code) over (
            partition by readings.machine_code order by readings.changed_at
        ) as previous_state_code,
        lag(readings.reason_number) over (
            partition by readings.machine_code order by readings.changed_at
        ) as previous_reason_number,
        row_number() over (
            partition by readings.machine_code order by readings.changed_at
        ) as reading_number
    from readings
),

renamed as (
    select
        message_id,
        site_code,
        line_code,
        machine_code,
        case state_code
            when 1 then 'running'
            when 2 then 'idle'
            when 3 then 'setup'
            when 4 then 'planned_downtime'
            when 5 then 'unplanned_downtime'
        end as state,
        state_code,
        case reason_number
            when 1 then 'NO_ORDER'
            when 2 then 'WAIT_MAT'
            when 3 then 'CHANGEOVER'
            when 4 then 'BREAK'
            when 5 then 'PM'
            when 6 then 'MECH'
            when 7 then 'ELEC'
            when 8 then 'TOOL'
            when 9 then 'JAM'
        end as reason_code,
        reason_number,
        null::text as operation_id,
        changed_at,
        'modbus'::text as signal_path
    from with_previous
    where
        reading_number = 1
        or state_code is distinct from previous_state_code
        or reason_number is distinct from previous_reason_number
)

select * from renamed
