{#- The quality gate's decision per scope (site × production day), from the latest result of
    every check in dq.check_result: blocked (an error-severity check fails: the scope is not
    published), flagged (only warnings fail: published with a flag) or passed. publish_erp and
    the gated reporting views read it; it stays in schema dq, replaced in place
    (materialization replaced_view) so that the views built on it survive every build. -#}
{{
    config(
        schema='dq',
        materialized='replaced_view',
        persist_docs={'relation': true},
    )
}}

with check_results as (
    select * from {{ source('dq', 'check_result') }}
),

latest_results as (
    select distinct on (check_name, site_code, production_day) *
    from check_results
    order by check_name asc, site_code asc, production_day asc, checked_at desc, result_id desc
),

final as (
    select
        site_code,
        production_day,
        case
            when bool_or(severity = 'error' and failing_count > 0) then 'blocked'
            when bool_or(severity = 'warn' and failing_count > 0) then 'flagged'
            else 'passed'
        end as decision,
        coalesce(
            array_agg(check_name order by check_name) filter (where failing_count > 0),
            '{}'
        ) as failing_checks,
        max(checked_at) as decided_at
    from latest_results
    group by site_code, production_day
)

select * from final
