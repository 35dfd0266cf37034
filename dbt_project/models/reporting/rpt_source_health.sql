{#- Source health for operators and the report: per plant system the last load and its lag,
    what was quarantined, the open incidents (files set aside, waiting or late, answers
    refused, batches failed), the latest dbt source freshness of its raw tables and an open
    not-seen incident (no batch loaded for longer than its threshold), with a status —
    attention when anything is open, refused, stale or not seen, else ok. The watch's tables
    are read live (this is a view): the status is as of the last watch run, not the last
    transform. Not gated: it describes the platform's intake, not the plant's data. -#}
with source_health as (
    select * from {{ ref('mart_source_health') }}
),

freshness as (
    select * from {{ source('source_watch', 'source_freshness') }}
),

not_seen as (
    select * from {{ source('source_watch', 'source_not_seen') }}
),

latest_freshness_runs as (
    select distinct on (source_name)
        source_name,
        run_id
    from freshness
    order by source_name asc, checked_at desc, freshness_id desc
),

latest_freshness as (
    select freshness.*
    from freshness
    inner join latest_freshness_runs
        on
            latest_freshness_runs.source_name = freshness.source_name
            and latest_freshness_runs.run_id = freshness.run_id
),

freshness_by_system as (
    select
        source_name as system,
        case
            when bool_or(status in ('error', 'runtime error')) then 'error'
            when bool_or(status = 'warn') then 'warn'
            else 'pass'
        end as freshness_status,
        count(*) filter (where status <> 'pass') as stale_table_count,
        string_agg(table_name, ', ' order by table_name) filter (where status <> 'pass') as stale_tables,
        max(checked_at) as freshness_checked_at
    from latest_freshness
    group by source_name
),

open_not_seen as (
    select
        system,
        opened_at as not_seen_since,
        (
            select string_agg(entity_keys.entity_name, ', ' order by entity_keys.entity_name)
            from jsonb_object_keys(not_seen.silent_entities) as entity_keys (entity_name)
        ) as not_seen_entities
    from not_seen
    where cleared_at is null
),

systems as (
    select system from source_health
    union
    select system from freshness_by_system
    union
    select system from open_not_seen
),

final as (
    select
        systems.system::text as system,
        case
            when
                coalesce(source_health.open_incident_count, 0) > 0
                or coalesce(source_health.refused_batch_count, 0) > 0
                or coalesce(source_health.rejected_batch_count, 0) > 0
                or freshness_by_system.freshness_status in ('warn', 'error')
                or open_not_seen.system is not null
                then 'attention'
            else 'ok'
        end::text as status,
        source_health.last_loaded_at::timestamptz as last_loaded_at,
        source_health.load_lag_seconds::double precision as load_lag_seconds,
        source_health.oldest_watermark_at::timestamptz as oldest_watermark_at,
        coalesce(source_health.rows_loaded_count, 0)::bigint as rows_loaded_count,
        coalesce(source_health.rows_quarantined_count, 0)::bigint as rows_quarantined_count,
        coalesce(source_health.open_incident_count, 0)::bigint as open_incident_count,
        coalesce(source_health.files_set_aside_count, 0)::bigint as files_set_aside_count,
        coalesce(source_health.files_waiting_count, 0)::bigint as files_waiting_count,
        coalesce(source_health.files_late_count, 0)::bigint as files_late_count,
        coalesce(source_health.answers_refused_count, 0)::bigint as answers_refused_count,
        coalesce(source_health.batches_failed_count, 0)::bigint as batches_failed_count,
        source_health.open_incident_kinds::text as open_incident_kinds,
        freshness_by_system.freshness_status::text as freshness_status,
        coalesce(freshness_by_system.stale_table_count, 0)::bigint as stale_table_count,
        freshness_by_system.stale_tables::text as stale_tables,
        freshness_by_system.freshness_checked_at::timestamptz as freshness_checked_at,
        open_not_seen.not_seen_since::timestamptz as not_seen_since,
        open_not_seen.not_seen_entities::text as not_seen_entities
    from systems
    left join source_health on source_health.system = systems.system
    left join freshness_by_system on freshness_by_system.system = systems.system
    left join open_not_seen on open_not_seen.system = systems.system
)

select * from final
