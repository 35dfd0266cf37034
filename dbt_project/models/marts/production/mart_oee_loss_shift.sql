{#- Where each machine × shift's time went, by machine state and reason code (long format, with
    English and Chinese reason text): running, planned downtime (BREAK, PM), unplanned downtime
    by failure reason, setup, idle. Incremental like mart_oee_shift. -#}
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

{{ recompute_changed_keys(
    changed_keys_sql, ['machine_code', 'production_date', 'shift_code'], {'in_scope': 'states'}
) }}

final as (
    select
        shift_id,
        site_code,
        line_code,
        machine_code,
        production_date,
        shift_code,
        iso22400_time_category,
        machine_state,
        coalesce(reason_code, '-') as reason_code,
        max(reason_text_en) as reason_text_en,
        max(reason_text_zh) as reason_text_zh,
        sum(duration_seconds)::bigint as duration_seconds,
        count(*)::bigint as interval_count
    from in_scope
    group by
        shift_id, site_code, line_code, machine_code, production_date, shift_code,
        iso22400_time_category, machine_state, coalesce(reason_code, '-')
)

select * from final
