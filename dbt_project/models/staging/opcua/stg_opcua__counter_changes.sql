{#- Piece counters from the OPC UA server's history: one row per machine, counter and source
    timestamp at which the counter changed, with the pieces since the previous reading.
    The rule for increments: `value - previous value` of the same machine and counter; a value
    below the previous one is a counter reset (the PLC restarted from 0: OPC UA counters are
    UInt64 and do not roll over), whose increment is the value itself (`is_counter_reset`);
    a machine's first reading in raw has no increment (the pieces before it are unknown).
    Readings whose status was not Good never reached raw (quarantined by the load), so the
    next good reading's increment carries their pieces. -#}
with source as (
    select * from {{ source_or_empty('opcua', 'tag_values') }}
    where tag in ('GoodCount', 'ScrapCount', 'ReworkCount', 'TotalCount')
),

readings as (
    select
        site_code,
        line_code,
        machine_code,
        case tag
            when 'GoodCount' then 'good'
            when 'ScrapCount' then 'scrap'
            when 'ReworkCount' then 'rework'
            when 'TotalCount' then 'total'
        end as counter,
        value_numeric::bigint as counter_value,
        source_at,
        status
    from source
),

with_previous as (
    select
        readings.*,
        lag(readings.counter_value) over (
            partition by readings.machine_code, readings.counter
            order by readings.source_at
        ) as previous_value
    from readings
),

renamed as (
    select
        site_code,
        line_code,
        machine_code,
        counter,
        -- `value` and `increment`: the column names every path's counter changes share
        counter_value as value,  -- noqa: RF04
        case
            when previous_value is null then null
            when counter_value < previous_value then counter_value
            else counter_value - previous_value
        end as increment,  -- noqa: RF04
        coalesce(counter_value < previous_value, false) as is_counter_reset,
        source_at as changed_at,
        status,
        'opcua'::text as signal_path
    from with_previous
)

select * from renamed
