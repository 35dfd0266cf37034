{#- The quality gate at a glance: for every check (source system × check name), its latest run
    from dq.check_result — how many scopes (site × production day) it evaluated, how many failed,
    the failing rows summed — and a status: fail (an error-severity check fails: those scopes are
    blocked), warn (a warning fails: those scopes are published flagged) or pass. Not gated: it
    describes the gate itself. -#}
with check_results as (
    select * from {{ source('dq', 'check_result') }}
),

latest_runs as (
    select distinct on (source_system, check_name)
        source_system,
        check_name,
        run_id
    from check_results
    order by source_system asc, check_name asc, checked_at desc, result_id desc
),

latest_results as (
    select check_results.*
    from check_results
    inner join latest_runs
        on
            latest_runs.source_system = check_results.source_system
            and latest_runs.check_name = check_results.check_name
            and latest_runs.run_id = check_results.run_id
),

by_check as (
    select
        source_system,
        check_name,
        run_id,
        string_agg(distinct check_kind, ', ') as check_kind,
        string_agg(distinct target, ', ') as target,
        case when bool_or(severity = 'error') then 'error' else 'warn' end as severity,
        max(checked_at) as last_checked_at,
        count(distinct row(site_code, production_day)) as scopes_checked,
        count(distinct row(site_code, production_day)) filter (where failing_count > 0) as scopes_failing,
        sum(failing_count) as failing_count,
        bool_or(severity = 'error' and failing_count > 0) as has_failing_error,
        bool_or(failing_count > 0) as has_failing_rows
    from latest_results
    group by source_system, check_name, run_id
),

final as (
    select
        source_system,
        check_name,
        check_kind,
        target,
        severity,
        run_id,
        last_checked_at,
        scopes_checked::bigint as scopes_checked,
        scopes_failing::bigint as scopes_failing,
        failing_count::bigint as failing_count,
        case
            when has_failing_error then 'fail'
            when has_failing_rows then 'warn'
            else 'pass'
        end as status
    from by_check
)

select * from final
