{#- ISO 22400 OEE per machine and shift. PBT = shift length − planned downtime (BREAK, PM);
    APT = time running; PRI = Σ ideal cycle time × produced pieces; PQ/GQ/SQ/RQ from the shift's
    confirmations. availability = APT/PBT, effectiveness = PRI/APT (uncapped),
    quality_ratio = GQ/PQ, OEE = their product, 0 when a factor is NULL.
    Incremental: the machine × shift keys whose inputs changed in the run's data interval are
    recomputed whole from the facts (delete+insert). -#}
{{
    config(
        materialized='incremental',
        unique_key=['machine_code', 'production_date', 'shift_code'],
        indexes=[{'columns': ['machine_code', 'production_date', 'shift_code']}],
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}
{#- rendered always, so the facts are dependencies whether or not an interval is set -#}
{%- set changed_keys_sql = changed_machine_shifts() %}

with states as (
    select * from {{ ref('fct_machine_state_interval') }}
),

confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
),

shifts as (
    select * from {{ ref('dim_shift') }}
),

{{ recompute_changed_keys(
    changed_keys_sql, ['machine_code', 'production_date', 'shift_code'],
    {'states_in_scope': 'states', 'confirmations_in_scope': 'confirmations'}
) }}

state_times as (
    select
        site_code,
        line_code,
        machine_code,
        shift_id,
        production_date,
        shift_code,
        sum(duration_seconds) filter (where iso22400_time_category = 'running') as apt_seconds,
        sum(duration_seconds) filter (where iso22400_time_category = 'planned_downtime')
            as planned_downtime_seconds,
        sum(duration_seconds) filter (where reason_code = 'BREAK') as break_seconds,
        sum(duration_seconds) filter (where reason_code = 'PM') as preventive_maintenance_seconds,
        sum(duration_seconds) filter (where iso22400_time_category = 'unplanned_downtime')
            as unplanned_downtime_seconds,
        sum(duration_seconds) filter (where reason_code = 'MECH') as mechanical_failure_seconds,
        sum(duration_seconds) filter (where reason_code = 'ELEC') as electrical_failure_seconds,
        sum(duration_seconds) filter (where reason_code = 'TOOL') as tool_breakage_seconds,
        sum(duration_seconds) filter (where reason_code = 'JAM') as material_jam_seconds,
        sum(duration_seconds) filter (
            where iso22400_time_category = 'unplanned_downtime'
            and coalesce(reason_code, '') not in ('MECH', 'ELEC', 'TOOL', 'JAM')
        ) as other_unplanned_downtime_seconds,
        sum(duration_seconds) filter (where iso22400_time_category = 'setup') as setup_seconds,
        sum(duration_seconds) filter (where iso22400_time_category = 'idle') as idle_seconds
    from states_in_scope
    group by site_code, line_code, machine_code, shift_id, production_date, shift_code
),

shift_output as (
    select
        site_code,
        line_code,
        machine_code,
        shift_id,
        production_date,
        shift_code,
        sum(pri_seconds) as pri_seconds,
        sum(produced_count) as pq,
        sum(good_count) as gq,
        sum(scrap_count) as sq,
        sum(rework_count) as rq,
        count(*) as confirmation_count
    from confirmations_in_scope
    group by site_code, line_code, machine_code, shift_id, production_date, shift_code
),

machine_shifts as (
    select
        coalesce(state_times.site_code, shift_output.site_code) as site_code,
        coalesce(state_times.line_code, shift_output.line_code) as line_code,
        coalesce(state_times.machine_code, shift_output.machine_code) as machine_code,
        coalesce(state_times.shift_id, shift_output.shift_id) as shift_id,
        coalesce(state_times.apt_seconds, 0) as apt_seconds,
        coalesce(state_times.planned_downtime_seconds, 0) as planned_downtime_seconds,
        coalesce(state_times.break_seconds, 0) as break_seconds,
        coalesce(state_times.preventive_maintenance_seconds, 0) as preventive_maintenance_seconds,
        coalesce(state_times.unplanned_downtime_seconds, 0) as unplanned_downtime_seconds,
        coalesce(state_times.mechanical_failure_seconds, 0) as mechanical_failure_seconds,
        coalesce(state_times.electrical_failure_seconds, 0) as electrical_failure_seconds,
        coalesce(state_times.tool_breakage_seconds, 0) as tool_breakage_seconds,
        coalesce(state_times.material_jam_seconds, 0) as material_jam_seconds,
        coalesce(state_times.other_unplanned_downtime_seconds, 0) as other_unplanned_downtime_seconds,
        coalesce(state_times.setup_seconds, 0) as setup_seconds,
        coalesce(state_times.idle_seconds, 0) as idle_seconds,
        coalesce(shift_output.pri_seconds, 0) as pri_seconds,
        coalesce(shift_output.pq, 0) as pq,
        coalesce(shift_output.gq, 0) as gq,
        coalesce(shift_output.sq, 0) as sq,
        coalesce(shift_output.rq, 0) as rq,
        coalesce(shift_output.confirmation_count, 0) as confirmation_count
    from state_times
    full outer join shift_output
        on
            shift_output.machine_code = state_times.machine_code
            and shift_output.shift_id = state_times.shift_id
),

elements as (
    select
        machine_shifts.*,
        shifts.production_date,
        shifts.shift_code,
        shifts.shift_start_at,
        shifts.shift_end_at,
        shifts.shift_seconds,
        shifts.shift_seconds - machine_shifts.planned_downtime_seconds as pbt_seconds
    from machine_shifts
    inner join shifts on shifts.shift_id = machine_shifts.shift_id
),

ratios as (
    select
        elements.*,
        {{ kpi_ratio('apt_seconds', 'pbt_seconds') }} as availability,
        {{ kpi_ratio('pri_seconds', 'apt_seconds') }} as effectiveness,
        {{ kpi_ratio('gq', 'pq') }} as quality_ratio
    from elements
),

final as (
    select
        shift_id,
        site_code,
        line_code,
        machine_code,
        production_date,
        shift_code,
        shift_start_at,
        shift_end_at,
        shift_seconds::bigint as shift_seconds,
        pbt_seconds::bigint as pbt_seconds,
        apt_seconds::bigint as apt_seconds,
        pri_seconds::numeric(18, 6) as pri_seconds,
        pq::bigint as pq,
        gq::bigint as gq,
        sq::bigint as sq,
        rq::bigint as rq,
        availability,
        effectiveness,
        quality_ratio,
        {{ oee_from_factors('availability', 'effectiveness', 'quality_ratio') }} as oee,
        planned_downtime_seconds::bigint as planned_downtime_seconds,
        break_seconds::bigint as break_seconds,
        preventive_maintenance_seconds::bigint as preventive_maintenance_seconds,
        unplanned_downtime_seconds::bigint as unplanned_downtime_seconds,
        mechanical_failure_seconds::bigint as mechanical_failure_seconds,
        electrical_failure_seconds::bigint as electrical_failure_seconds,
        tool_breakage_seconds::bigint as tool_breakage_seconds,
        material_jam_seconds::bigint as material_jam_seconds,
        other_unplanned_downtime_seconds::bigint as other_unplanned_downtime_seconds,
        setup_seconds::bigint as setup_seconds,
        idle_seconds::bigint as idle_seconds,
        confirmation_count::bigint as confirmation_count
    from ratios
)

select * from final
