{#- Piece counters from the OPC UA server's history: one row per machine, counter and source
    timestamp at which the counter changed, with the pieces since the previous reading.
    The rule for increments is the shared one (macro counter_increments), with OPC UA's
    parameters: `value - previous value` of the same machine and counter; a value below the
    previous one is a counter reset (the PLC restarted from 0: OPC UA counters are UInt64 and
    do not roll over), whose increment is the value itself (`is_counter_reset`); a machine's
    first reading in raw has no increment (the pieces before it are unknown).
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

changes as (
    -- the shared counter rule (macro counter_increments): UInt64 counters never roll over, a
    -- fall is a restart from 0
    {{ counter_increments('readings', 'source_at') }}
),

renamed as (
    select
        site_code,
        line_code,
        machine_code,
        counter,
        -- `value` and `increment`: the column names every path's counter changes share
        counter_value as value,  -- noqa: RF04
        increment,  -- noqa: RF04
        is_counter_reset,
        source_at as changed_at,
        status,
        'opcua'::text as signal_path
    from changes
)

select * from renamed
