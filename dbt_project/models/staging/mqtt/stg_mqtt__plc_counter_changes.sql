{#- Piece counters read from the PLCs by the Modbus edge collector (MQTT kind `plc`): one row per
    machine, counter and reading at which the counter changed (and each counter's first
    reading), with the pieces since the previous reading of the same machine and counter.
    The PLC's counters are 32-bit and roll over: (preset + pieces) mod 2^32. The rule, for a
    reading `value` after `previous` (the shared rule, macro counter_increments, with these
    parameters):
      - value >= previous: increment = value - previous;
      - value < previous, previous within `plc_rollover_margin` of 2^32 and the wrapped
        difference (value - previous) mod 2^32 within the margin too: a rollover, increment =
        (value - previous) mod 2^32 (is_rollover);
      - value < previous otherwise: the counter went back (a PLC reset, a wrong read); flagged
        (status 'backwards', is_counter_reset), no increment: the rule cannot tell how many
        pieces it hides, and the next reading counts from this value;
      - a counter's first reading in raw: no increment (the pieces before it are unknown).
    changed_at is the PLC's clock (the reading's plant_time, whole seconds): the pieces of a
    change completed after the previous reading, at or before changed_at. Raw holds each
    message_id, i.e. each (machine, PLC instant), once. The raw table is the stream's own, made
    by the warehouse's bootstrap (not by a first extraction), so the source is read directly
    (and the unit test of the rule can mock it). -#}
with source as (
    select * from {{ source('mqtt', 'messages') }}
    where kind = 'plc'
),

counters as (
    select * from (
        values
        ('good', 'good_count'),
        ('scrap', 'scrap_count'),
        ('rework', 'rework_count'),
        ('total', 'total_count')
    ) as counter_registers (counter, register_name)
),

readings as (
    select
        source.message_id,
        split_part(source.topic, '/', 2) as site_code,
        split_part(source.topic, '/', 4) as line_code,
        source.machine_code,
        counters.counter,
        (source.payload -> 'registers' ->> counters.register_name)::bigint as counter_value,
        source.event_time as changed_at
    from source
    cross join counters
),

changes as (
    -- the shared counter rule (macro counter_increments) with the PLC's parameters: rollover
    -- modulus 2^32 (32-bit counters), margin plc_rollover_margin, reset_counts_from_zero false
    -- (any other fall is flagged and not counted)
    {{ counter_increments('readings', 'changed_at', 4294967296, var('plc_rollover_margin', 1000000), false) }}
),

renamed as (
    select
        message_id,
        site_code,
        line_code,
        machine_code,
        counter,
        -- value, increment: the shop-floor contract's column names (keywords Postgres takes unquoted)
        counter_value as value,  -- noqa: RF04
        increment,  -- noqa: RF04
        is_rollover,
        is_counter_reset,
        changed_at,
        case when is_counter_reset then 'backwards' else 'good' end as status,
        'modbus'::text as signal_path
    from changes
    where previous_value is null or counter_value != previous_value
)

select * from renamed
