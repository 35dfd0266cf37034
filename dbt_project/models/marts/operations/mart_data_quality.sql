{#- Data-quality trend: per plant system, check and day the gate ran it, how many scopes
    (site × production day) it evaluated, how many failed, and the failing rows — the history
    behind the gate's decisions (dq.check_result), for trend charts and for spotting a source
    that degrades. Latest result per scope and day, so re-runs of a day do not double count. -#}
with results as (
    select * from {{ source('dq', 'check_result') }}
),

latest_per_day as (
    select distinct on (check_name, site_code, production_day, (checked_at at time zone 'UTC')::date)
        source_system,
        check_name,
        check_kind,
        severity,
        (checked_at at time zone 'UTC')::date as checked_date,
        site_code,
        production_day,
        failing_count,
        checked_at
    from results
    order by
        check_name asc, site_code asc, production_day asc, (checked_at at time zone 'UTC')::date,
        checked_at desc
),

final as (
    select
        source_system,
        check_name,
        checked_date,
        min(check_kind) as check_kind,
        min(severity) as severity,
        count(*) as scopes_checked,
        count(*) filter (where failing_count > 0) as scopes_failing,
        coalesce(sum(failing_count), 0)::bigint as failing_rows,
        max(checked_at) as last_checked_at
    from latest_per_day
    group by source_system, check_name, checked_date
)

select
    final.*,
    round(1 - final.scopes_failing::numeric / nullif(final.scopes_checked, 0), 4) as scope_pass_ratio
from final
