{#- Pieces and state time per machine × shift, from each shop-floor signal path that carries
    them: OPC UA history (opcua), MQTT machine events (mqtt), the PLCs' registers published by
    the edge collector (modbus); a new path adds its staging models to the two unions below.
    The marts do not care how a signal came: whichever path delivered it, the counts and the
    seconds per shift are the MES's and the truth's.
    Placement: a piece counts at the instant it completes, so a counter change belongs to the
    shift that holds it in (start, end] (placed by assign_shift one microsecond earlier; source
    timestamps carry milliseconds); a state lasts from its change to the machine's next change
    on the same path and is split at shift boundaries (the machine's last state, still open,
    is not counted); a process sample belongs to [start, end). The machine's site comes from
    the equipment register (dim_equipment): a signal of a machine the register does not know
    is not placed (the staging models' relationships tests warn about it).
    A full table, not incremental, for now: the staging views number readings (lag) and states
    (lead) over each machine's whole history, so recomputing only changed shifts would still
    read all of raw; it wants an incremental staging step first (README, the OPC UA client). -#}
with state_changes as (
    select
        machine_code,
        state,
        changed_at,
        signal_path
    from {{ ref('stg_opcua__machine_state_changes') }}
    union all
    select
        machine_code,
        state,
        changed_at,
        signal_path
    from {{ ref('stg_mqtt__machine_state_changes') }}
    union all
    select
        machine_code,
        state,
        changed_at,
        signal_path
    from {{ ref('stg_mqtt__plc_state_changes') }}
),

counter_changes as (
    select
        machine_code,
        counter,
        increment,
        is_counter_reset,
        changed_at,
        signal_path
    from {{ ref('stg_opcua__counter_changes') }}
    union all
    select
        machine_code,
        counter,
        increment,
        is_counter_reset,
        changed_at,
        signal_path
    from {{ ref('stg_mqtt__counter_changes') }}
    union all
    select
        machine_code,
        counter,
        increment,
        is_counter_reset,
        changed_at,
        signal_path
    from {{ ref('stg_mqtt__plc_counter_changes') }}
),

temperature_samples as (
    select
        machine_code,
        sample_value,
        is_good_quality,
        sampled_at,
        signal_path
    from {{ ref('stg_opcua__process_values') }}
    where tag_name = 'temperature'
),

machines as (
    select
        machine_code,
        site_code,
        line_code
    from {{ ref('dim_equipment') }}
    where hierarchy_level = 'machine'
),

sites as (
    select * from {{ ref('plant_sites') }}
),

shifts as (
    select * from {{ ref('dim_shift') }}
),

-- pieces and temperature samples, placed in their shifts together (one assign_shift): a
-- counter change in the shift that holds it in (start, end] (placed one microsecond before
-- it), a sample in the one that holds it in [start, end)
point_events as (
    select
        signal_path,
        machine_code,
        counter as measure,
        increment,
        is_counter_reset,
        null::double precision as sample_value,
        null::boolean as is_good_quality,
        changed_at - interval '1 microsecond' as placed_at
    from counter_changes
    union all
    select
        signal_path,
        machine_code,
        'temperature' as measure,
        null::bigint as increment,  -- noqa: RF04
        null::boolean as is_counter_reset,
        sample_value,
        is_good_quality,
        sampled_at as placed_at
    from temperature_samples
),

event_rows as (
    select
        point_events.*,
        machines.site_code,
        row_number() over () as event_row_id
    from point_events
    inner join machines on machines.machine_code = point_events.machine_code
),

events_placed as (
    {{ assign_shift('event_rows', 'event_row_id', 'placed_at') }}
),

measures as (
    select
        event_rows.signal_path,
        event_rows.machine_code,
        events_placed.shift_id,
        coalesce(sum(event_rows.increment) filter (where event_rows.measure = 'good'), 0) as good_count,
        coalesce(sum(event_rows.increment) filter (where event_rows.measure = 'scrap'), 0) as scrap_count,
        coalesce(sum(event_rows.increment) filter (where event_rows.measure = 'rework'), 0) as rework_count,
        sum(event_rows.increment) filter (where event_rows.measure = 'total') as total_counter_count,
        count(*) filter (where event_rows.measure = 'total') as total_counter_readings,
        count(*) filter (where event_rows.is_counter_reset) as counter_reset_count,
        -- temperature: good samples only; bad ones are counted, their values never used
        count(*) filter (
            where event_rows.measure = 'temperature' and event_rows.is_good_quality
        ) as temperature_sample_count,
        count(*) filter (
            where event_rows.measure = 'temperature' and not event_rows.is_good_quality
        ) as temperature_bad_sample_count,
        -- averaged as numeric (exact, so the same whatever order the rows are summed in: a
        -- double precision sum differed in its last bits between two builds), then a double
        avg(event_rows.sample_value::numeric) filter (
            where event_rows.measure = 'temperature' and event_rows.is_good_quality
        )::double precision as temperature_avg_celsius
    from event_rows
    inner join events_placed on events_placed.event_row_id = event_rows.event_row_id
    group by event_rows.signal_path, event_rows.machine_code, events_placed.shift_id
),

-- state time: each closed state interval split at the shift boundaries it crosses
state_intervals as (
    select
        state_changes.*,
        machines.site_code,
        lead(state_changes.changed_at) over (
            partition by state_changes.signal_path, state_changes.machine_code
            order by state_changes.changed_at
        ) as ended_at
    from state_changes
    inner join machines on machines.machine_code = state_changes.machine_code
),

state_in_shifts as (
    select
        state_intervals.signal_path,
        state_intervals.machine_code,
        shifts.shift_id,
        state_intervals.state,
        extract(
            epoch from
            least(state_intervals.ended_at, shifts.shift_end_at)
            - greatest(state_intervals.changed_at, shifts.shift_start_at)
        ) as state_seconds
    from state_intervals
    inner join sites on sites.site_code = state_intervals.site_code
    cross join
        lateral generate_series(
            (state_intervals.changed_at at time zone sites.timezone)::date - 1,
            (state_intervals.ended_at at time zone sites.timezone)::date,
            interval '1 day'
        ) as candidate_dates (candidate_date)
    inner join shifts
        on
            shifts.site_code = state_intervals.site_code
            and shifts.production_date = candidate_dates.candidate_date::date
    where
        state_intervals.ended_at is not null
        and shifts.shift_start_at < state_intervals.ended_at
        and shifts.shift_end_at > state_intervals.changed_at
),

state_time as (
    select
        signal_path,
        machine_code,
        shift_id,
        sum(state_seconds) filter (where state = 'running')::bigint as running_seconds,
        sum(state_seconds) filter (where state = 'idle')::bigint as idle_seconds,
        sum(state_seconds) filter (where state = 'setup')::bigint as setup_seconds,
        sum(state_seconds) filter (where state = 'planned_downtime')::bigint as planned_downtime_seconds,
        sum(state_seconds) filter (where state = 'unplanned_downtime')::bigint as unplanned_downtime_seconds,
        count(*) as state_interval_count
    from state_in_shifts
    group by signal_path, machine_code, shift_id
),

keys as (
    select
        signal_path,
        machine_code,
        shift_id
    from measures
    union
    select
        signal_path,
        machine_code,
        shift_id
    from state_time
),

final as (
    select
        keys.shift_id || '|' || keys.machine_code || '|' || keys.signal_path as machine_signal_shift_id,
        keys.shift_id,
        shifts.site_code,
        machines.line_code,
        keys.machine_code,
        shifts.production_date,
        shifts.shift_code,
        shifts.shift_start_at,
        shifts.shift_end_at,
        keys.signal_path,
        coalesce(measures.good_count, 0) as good_count,
        coalesce(measures.scrap_count, 0) as scrap_count,
        coalesce(measures.rework_count, 0) as rework_count,
        case
            when measures.total_counter_readings > 0 then coalesce(measures.total_counter_count, 0)
            else coalesce(measures.good_count + measures.scrap_count + measures.rework_count, 0)
        end as total_count,
        coalesce(measures.counter_reset_count, 0) as counter_reset_count,
        coalesce(state_time.running_seconds, 0) as running_seconds,
        coalesce(state_time.idle_seconds, 0) as idle_seconds,
        coalesce(state_time.setup_seconds, 0) as setup_seconds,
        coalesce(state_time.planned_downtime_seconds, 0) as planned_downtime_seconds,
        coalesce(state_time.unplanned_downtime_seconds, 0) as unplanned_downtime_seconds,
        coalesce(state_time.state_interval_count, 0) as state_interval_count,
        coalesce(measures.temperature_sample_count, 0) as temperature_sample_count,
        coalesce(measures.temperature_bad_sample_count, 0) as temperature_bad_sample_count,
        measures.temperature_avg_celsius
    from keys
    inner join shifts on shifts.shift_id = keys.shift_id
    inner join machines on machines.machine_code = keys.machine_code
    left join measures
        on
            measures.signal_path = keys.signal_path
            and measures.machine_code = keys.machine_code
            and measures.shift_id = keys.shift_id
    left join state_time
        on
            state_time.signal_path = keys.signal_path
            and state_time.machine_code = keys.machine_code
            and state_time.shift_id = keys.shift_id
)

select * from final
