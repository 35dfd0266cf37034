{#- Good, scrap and rework pieces per line and local production date, for people and BI tools,
    gated like rpt_oee_line_day: blocked scopes and scopes the gate has not decided yet are left
    out, flagged ones marked. (Replaces the ungated table reporting.production_line_day.) -#}
with production_line_days as (
    select * from {{ ref('mart_production_line_day') }}
),

scope_status as (
    select * from {{ ref('scope_status') }}
),

final as (
    select
        production_line_days.site_code,
        production_line_days.line_code,
        production_line_days.production_date,
        production_line_days.good_count,
        production_line_days.scrap_count,
        production_line_days.rework_count,
        production_line_days.produced_count,
        production_line_days.confirmation_count,
        {{ gated_scope_flags() }}
    from production_line_days
    {{ gated_scope_join('production_line_days') }}
)

select * from final
