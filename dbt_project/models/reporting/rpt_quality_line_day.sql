{#- First-pass yield, scrap and rework per line and local production date, gated like
    rpt_oee_line_day (blocked and undecided scopes hidden, flagged ones marked). -#}
with quality_line_days as (
    select * from {{ ref('mart_quality') }}
),

scope_status as (
    select * from {{ ref('scope_status') }}
),

final as (
    select
        quality_line_days.site_code,
        quality_line_days.line_code,
        quality_line_days.production_date,
        quality_line_days.produced_count,
        quality_line_days.first_pass_good_count,
        quality_line_days.scrap_count,
        quality_line_days.rework_count,
        quality_line_days.fpy as first_pass_yield,
        quality_line_days.scrap_ratio,
        quality_line_days.rework_ratio,
        {{ gated_scope_flags() }}
    from quality_line_days
    {{ gated_scope_join('quality_line_days') }}
)

select * from final
