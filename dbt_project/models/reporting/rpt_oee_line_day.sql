{#- OEE per line and local production date, for people and BI tools: only the scopes (site ×
    production day) the quality gate let through. A blocked scope, or one the gate has not
    decided yet, is not shown; a flagged scope is shown with dq_flagged. -#}
with oee_line_days as (
    select * from {{ ref('mart_oee_line_day') }}
),

scope_status as (
    select * from {{ source('dq', 'scope_status') }}
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
        (scope_status.decision = 'flagged') as dq_flagged,
        nullif(array_to_string(scope_status.failing_checks, ', '), '') as dq_failing_checks
    from oee_line_days
    inner join scope_status
        on
            scope_status.site_code = oee_line_days.site_code
            and scope_status.production_day = oee_line_days.production_date
    where scope_status.decision in ('passed', 'flagged')
)

select * from final
