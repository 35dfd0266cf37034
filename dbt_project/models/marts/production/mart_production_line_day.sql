{#- Good, scrap and rework pieces per line and local production day (gated for BI tools in
    reporting.rpt_production_line_day).
    Incremental: the line-days with a confirmation (or its operation) recorded in the run's
    data interval are recomputed whole. -#}
{{
    config(
        materialized='incremental',
        unique_key=['line_code', 'production_date'],
        indexes=[{'columns': ['line_code', 'production_date']}],
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}

{%- set changed_keys_sql %}
    select line_code, production_date
    from confirmations
    where
        {{ changed_in_interval('recorded_at') }}
        or {{ changed_in_interval('operation_recorded_at') }}
{%- endset %}

with confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
),

{{ recompute_changed_keys(changed_keys_sql, ['line_code', 'production_date'], {'in_scope': 'confirmations'}) }}

final as (
    select
        site_code,
        line_code,
        production_date,
        sum(good_count)::bigint as good_count,
        sum(scrap_count)::bigint as scrap_count,
        sum(rework_count)::bigint as rework_count,
        sum(produced_count)::bigint as produced_count,
        count(*)::bigint as confirmation_count
    from in_scope
    group by site_code, line_code, production_date
)

select * from final
