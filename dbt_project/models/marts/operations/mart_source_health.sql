{#- Source health per system: the last load, how far the loaded data lags behind the build
    (measured_at, the build's transaction time), rows read/loaded, what was rejected
    (quarantined records, batches rejected for too many bad records, empty answers refused),
    the open source incidents by kind (files set aside or waiting, answers refused, batches
    failed) and the oldest high-water mark of its entities. -#}
with audit as (
    select * from {{ source('ops', 'load_audit') }}
),

incident as (
    select * from {{ source('ops', 'source_incident') }}
),

watermark as (
    select * from {{ source('ops', 'extract_watermark') }}
),

open_incidents as (
    select
        system,
        count(*) as open_incident_count,
        count(*) filter (
            where kind in ('file_set_aside', 'file_rejected', 'redelivery_set_aside', 'file_unmatched')
        ) as files_set_aside_count,
        count(*) filter (where kind = 'file_waiting') as files_waiting_count,
        count(*) filter (where kind = 'file_late') as files_late_count,
        count(*) filter (where kind = 'answer_refused') as answers_refused_count,
        count(*) filter (where kind = 'batch_failed') as batches_failed_count,
        string_agg(distinct kind, ', ' order by kind) as open_incident_kinds,
        max(last_seen_at) as last_incident_at
    from incident
    where resolved_at is null
    group by system
),

marks as (
    select
        system,
        min(loaded_upto) as oldest_watermark_at
    from watermark
    group by system
),

quarantine as (
    select * from {{ source('ops', 'quarantine') }}
),

loads as (
    select
        system,
        max(finished_at) as last_loaded_at,
        max(interval_end) filter (where status = 'loaded') as last_interval_end_at,
        count(*) as batch_count,
        count(distinct entity) as entity_count,
        sum(rows_read) as rows_read_count,
        sum(rows_loaded) as rows_loaded_count,
        sum(rows_quarantined) as rows_quarantined_count,
        sum(duplicates_skipped) as duplicates_skipped_count,
        count(*) filter (where status = 'rejected') as rejected_batch_count,
        count(*) filter (where status = 'refused') as refused_batch_count
    from audit
    group by system
),

quarantined as (
    select
        system,
        count(*) as quarantine_record_count,
        max(quarantined_at) as last_quarantined_at
    from quarantine
    group by system
),

final as (
    select
        coalesce(loads.system, quarantined.system, open_incidents.system)::text as system,
        loads.last_loaded_at::timestamptz as last_loaded_at,
        loads.last_interval_end_at::timestamptz as last_interval_end_at,
        current_timestamp::timestamptz as measured_at,
        extract(epoch from current_timestamp - loads.last_loaded_at)::double precision as load_lag_seconds,
        extract(epoch from current_timestamp - loads.last_interval_end_at)::double precision as data_lag_seconds,
        coalesce(loads.batch_count, 0)::bigint as batch_count,
        coalesce(loads.entity_count, 0)::bigint as entity_count,
        coalesce(loads.rows_read_count, 0)::bigint as rows_read_count,
        coalesce(loads.rows_loaded_count, 0)::bigint as rows_loaded_count,
        coalesce(loads.rows_quarantined_count, 0)::bigint as rows_quarantined_count,
        coalesce(loads.duplicates_skipped_count, 0)::bigint as duplicates_skipped_count,
        coalesce(loads.rejected_batch_count, 0)::bigint as rejected_batch_count,
        coalesce(quarantined.quarantine_record_count, 0)::bigint as quarantine_record_count,
        quarantined.last_quarantined_at::timestamptz as last_quarantined_at,
        coalesce(loads.refused_batch_count, 0)::bigint as refused_batch_count,
        coalesce(open_incidents.open_incident_count, 0)::bigint as open_incident_count,
        coalesce(open_incidents.files_set_aside_count, 0)::bigint as files_set_aside_count,
        coalesce(open_incidents.files_waiting_count, 0)::bigint as files_waiting_count,
        coalesce(open_incidents.files_late_count, 0)::bigint as files_late_count,
        coalesce(open_incidents.answers_refused_count, 0)::bigint as answers_refused_count,
        coalesce(open_incidents.batches_failed_count, 0)::bigint as batches_failed_count,
        open_incidents.open_incident_kinds::text as open_incident_kinds,
        open_incidents.last_incident_at::timestamptz as last_incident_at,
        marks.oldest_watermark_at::timestamptz as oldest_watermark_at
    from loads
    full outer join quarantined on quarantined.system = loads.system
    full outer join open_incidents
        on open_incidents.system = coalesce(loads.system, quarantined.system)
    left join marks
        on marks.system = coalesce(loads.system, quarantined.system, open_incidents.system)
)

select * from final
