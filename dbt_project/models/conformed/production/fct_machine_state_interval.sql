{#- ISA-95 equipment state history: one row per MES state interval, placed in its local shift.
    Incremental: the intervals recorded within the run's data interval (plus lookback) are
    merged by state_id; late and out-of-order intervals simply arrive in a later run. -#}
{{
    config(
        materialized='incremental',
        unique_key='state_id',
        indexes=[{'columns': ['state_id'], 'unique': true}, {'columns': ['recorded_at']}, {'columns': ['machine_code', 'production_date', 'shift_code']}],
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
    )
}}

with states as (
    select * from {{ ref('stg_mes__machine_states') }}
    where {{ changed_in_interval('recorded_at') }}
),

reasons as (
    select * from {{ ref('dim_machine_state_reason') }}
),

placed as (
    {{ assign_shift('states', 'state_id', 'state_start_at') }}
),

final as (
    select
        states.state_id,
        placed.shift_id,
        states.site_code,
        states.line_code,
        states.machine_code,
        placed.production_date,
        placed.shift_code,
        states.machine_state,
        states.reason_code,
        coalesce(reasons.reason_text_en, states.reason_text_en) as reason_text_en,
        coalesce(reasons.reason_text_zh, states.reason_text_zh) as reason_text_zh,
        case
            when states.machine_state = 'running' then 'running'
            else coalesce(reasons.iso22400_time_category, states.machine_state)
        end as iso22400_time_category,
        states.operation_id,
        states.state_start_at,
        states.state_end_at,
        states.duration_seconds,
        states.state_end_at <= placed.shift_end_at as is_within_shift,
        states.recorded_at
    from states
    left join placed on placed.state_id = states.state_id
    left join reasons on reasons.reason_code = states.reason_code
)

select * from final
