{#- Reliability per machine over the whole history: failures (EAM, = MES unplanned-downtime
    intervals), running time (MES state intervals), unplanned downtime (the failures' durations),
    MTBF = running / failures and MTTR = downtime / failures, both NULL for a machine without
    failures. Every EAM machine has a row, with or without failures. -#}
with equipment as (
    select * from {{ ref('dim_equipment') }}
),

maintenance_events as (
    select * from {{ ref('fct_maintenance_event') }}
),

state_intervals as (
    select * from {{ ref('fct_machine_state_interval') }}
),

machines as (
    select
        equipment_id,
        equipment_code as machine_code,
        site_code,
        line_code
    from equipment
    where hierarchy_level = 'machine'
),

failures as (
    select
        equipment_id,
        count(*) as failure_count,
        coalesce(sum(duration_seconds), 0) as unplanned_downtime_seconds
    from maintenance_events
    where event_type = 'failure'
    group by equipment_id
),

running as (
    select
        machine_code,
        sum(duration_seconds) as running_seconds
    from state_intervals
    where machine_state = 'running'
    group by machine_code
),

final as (
    select
        machines.machine_code,
        machines.equipment_id,
        machines.site_code,
        machines.line_code,
        coalesce(failures.failure_count, 0)::bigint as failure_count,
        coalesce(running.running_seconds, 0)::bigint as running_seconds,
        coalesce(failures.unplanned_downtime_seconds, 0)::bigint as unplanned_downtime_seconds,
        {{ maintenance_mtbf_seconds('running.running_seconds', 'failures.failure_count') }} as mtbf_seconds,
        {{ maintenance_mttr_seconds('failures.unplanned_downtime_seconds', 'failures.failure_count') }}
            as mttr_seconds
    from machines
    left join failures on failures.equipment_id = machines.equipment_id
    left join running on running.machine_code = machines.machine_code
)

select * from final
