{#- Pieces and state time per machine × shift, from each shop-floor signal path that carries
    them: OPC UA history (opcua), MQTT machine events (mqtt), the PLCs' registers published by
    the edge collector (modbus); a new path adds its staging models to the two unions below.
    The marts do not care how a signal came: whichever path delivered it, the counts and the
    seconds per shift are the MES's and the truth's, and so is the ISO 22400 PRI (pri_seconds:
    each piece × the ideal cycle time of the operation it was made for, the MES operation the
    machine reports), from which mart_oee_shift_by_signal_path computes OEE per path.
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
        operation_id,
        changed_at,
        signal_path
    from {{ ref('stg_opcua__machine_state_changes') }}
    union all
    select
        machine_code,
        state,
        operation_id,
        changed_at,
        signal_path
    from {{ ref('stg_mqtt__machine_state_changes') }}
    union all
    select
        machine_code,
        state,
        operation_id,
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
        null::text as operation_id,
        changed_at,
        signal_path
    from {{ ref('stg_opcua__counter_changes') }}
    union all
    select
        machine_code,
        counter,
        increment,
        is_counter_reset,
        operation_id,
        changed_at,
        signal_path
    from {{ ref('stg_mqtt__counter_changes') }}
    union all
    select
        machine_code,
        counter,
        increment,
        is_counter_reset,
        null::text as operation_id,
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

operations as (
    select
        operation_id,
        ideal_cycle_time_seconds
    from {{ ref('stg_mes__operations') }}
),

-- The operation a counter change's pieces belong to, for the ISO 22400 PRI (ideal cycle time ×
-- pieces): the one its event names (MQTT counter events carry it), else the one named by the
-- machine's latest state change on the same path before it (OPC UA writes State, ReasonCode
-- and OperationId together; the PLC knows no operation, so Modbus pieces have none). A counter
-- change at the instant of a state change belongs to the interval that ends there, as pieces
-- are placed ((start, end]): counters sort before state changes at the same instant.
-- materialized: its row numbers are the join key of the two CTEs that read it
counter_rows as materialized (
    select
        counter_changes.*,
        row_number() over () as counter_row_id
    from counter_changes
),

operation_timeline as (
    select
        signal_path,
        machine_code,
        changed_at,
        1 as is_state_change,
        operation_id,
        null::bigint as counter_row_id
    from state_changes
    union all
    select
        signal_path,
        machine_code,
        changed_at,
        0 as is_state_change,
        operation_id,
        counter_row_id
    from counter_rows
),

operation_runs as (
    select
        signal_path,
        machine_code,
        changed_at,
        is_state_change,
        operation_id,
        counter_row_id,
        count(*) filter (where is_state_change = 1) over (
            partition by signal_path, machine_code
            order by changed_at, is_state_change
            rows between unbounded preceding and current row
        ) as state_change_seq
    from operation_timeline
),

operation_carried as (
    select
        counter_row_id,
        coalesce(
            operation_id,
            first_value(operation_id) over (
                partition by signal_path, machine_code, state_change_seq
                order by is_state_change desc
            )
        ) as operation_id
    from operation_runs
),

counter_operations as (
    select
        operation_carried.counter_row_id,
        operation_carried.operation_id,
        operations.ideal_cycle_time_seconds
    from operation_carried
    left join operations on operations.operation_id = operation_carried.operation_id
    where operation_carried.counter_row_id is not null
),

-- pieces and temperature samples, placed in their shifts together (one assign_shift): a
-- counter change in the shift that holds it in (start, end] (placed one microsecond before
-- it), a sample in the one that holds it in [start, end)
point_events as (
    select
        counter_rows.signal_path,
        counter_rows.machine_code,
        counter_rows.counter as measure,
        counter_rows.increment,
        counter_rows.is_counter_reset,
        counter_operations.ideal_cycle_time_seconds,
        null::double precision as sample_value,
        null::boolean as is_good_quality,
        counter_rows.changed_at - interval '1 microsecond' as placed_at
    from counter_rows
    inner join counter_operations on counter_operations.counter_row_id = counter_rows.counter_row_id
    union all
    select
        signal_path,
        machine_code,
        'temperature' as measure,
        null::bigint as increment,  -- noqa: RF04
        null::boolean as is_counter_reset,
        null::numeric as ideal_cycle_time_seconds,
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
        -- PRI: each produced piece (good, scrap or rework: each piece is counted by one of
        -- them) × its operation's ideal cycle time; pieces of no known operation apart
        sum(event_rows.increment * event_rows.ideal_cycle_time_seconds) filter (
            where event_rows.measure in ('good', 'scrap', 'rework')
        ) as pri_seconds,
        coalesce(sum(event_rows.increment) filter (
            where event_rows.measure in ('good', 'scrap', 'rework')
            and event_rows.ideal_cycle_time_seconds is null
        ), 0) as pieces_without_operation_count,
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
        coalesce(measures.pri_seconds, 0)::numeric(18, 6) as pri_seconds,
        coalesce(measures.pieces_without_operation_count, 0)::bigint as pieces_without_operation_count,
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
