{#- OEE per line and local production date, for people and BI tools: only the scopes (site ×
    production day) the quality gate let through. A blocked scope, or one the gate has not
    decided yet, is not shown; a flagged scope is shown with dq_flagged. -#}
with oee_line_days as (
    select * from {{ ref('mart_oee_line_day') }}
),

scope_status as (
    select * from {{ ref('scope_status') }}
),

final as (
    select
        oee_line_days.site_code,
        oee_line_days.line_code,
        oee_line_days.production_date,
        oee_line_days.availability,
        oee_line_days.effectiveness,
        oee_line_days.quality_ratio,
        oee_line_days.oee,
        {{ gated_scope_flags() }}
    from oee_line_days
    {{ gated_scope_join('oee_line_days') }}
)

select * from final
