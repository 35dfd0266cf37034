{#- Downtime Pareto per line: the time lost against planned busy time (ISO 22400: unplanned
    downtime, setup and idle; planned breaks and maintenance are not losses) by reason, over the
    gated scopes only (a blocked or undecided site × production day contributes nothing), largest
    first, with each reason's share of the line's lost time and the cumulative share. -#}
with losses as (
    select * from {{ ref('mart_oee_loss_shift') }}
    where iso22400_time_category in ('unplanned_downtime', 'setup', 'idle')
),

scope_status as (
    select * from {{ ref('scope_status') }}
),

gated as (
    select
        losses.*,
        (scope_status.decision = 'flagged') as is_flagged_scope
    from losses
    {{ gated_scope_join('losses') }}
),

by_reason as (
    select
        site_code,
        line_code,
        iso22400_time_category,
        reason_code,
        max(reason_text_en) as reason_text_en,
        max(reason_text_zh) as reason_text_zh,
        sum(duration_seconds) as downtime_seconds,
        sum(interval_count) as stop_count,
        count(distinct production_date) as production_date_count,
        min(production_date) as first_production_date,
        max(production_date) as last_production_date,
        bool_or(is_flagged_scope) as dq_flagged
    from gated
    group by site_code, line_code, iso22400_time_category, reason_code
),

ranked as (
    select
        by_reason.*,
        row_number() over (
            partition by by_reason.site_code, by_reason.line_code
            order by by_reason.downtime_seconds desc, by_reason.iso22400_time_category asc, by_reason.reason_code asc
        ) as pareto_rank,
        sum(by_reason.downtime_seconds) over (
            partition by by_reason.site_code, by_reason.line_code
            order by by_reason.downtime_seconds desc, by_reason.iso22400_time_category asc, by_reason.reason_code asc
            rows between unbounded preceding and current row
        ) as cumulative_downtime_seconds,
        sum(by_reason.downtime_seconds)
            over (partition by by_reason.site_code, by_reason.line_code)
            as line_downtime_seconds
    from by_reason
),

final as (
    select
        site_code,
        line_code,
        iso22400_time_category,
        reason_code,
        reason_text_en,
        reason_text_zh,
        (downtime_seconds / 3600.0)::double precision as downtime_hours,
        stop_count::bigint as stop_count,
        pareto_rank::integer as pareto_rank,
        {{ kpi_ratio('downtime_seconds', 'line_downtime_seconds') }} as downtime_share,
        {{ kpi_ratio('cumulative_downtime_seconds', 'line_downtime_seconds') }} as cumulative_downtime_share,
        production_date_count::bigint as production_date_count,
        first_production_date,
        last_production_date,
        dq_flagged
    from ranked
)

select * from final
