{#- Source health per system: the last load, how far the loaded data lags behind the build
    (measured_at, the build's transaction time), rows read/loaded, and what was rejected
    (quarantined records, batches rejected for too many bad records). -#}
with audit as (
    select * from {{ source('ops', 'load_audit') }}
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
        count(*) filter (where status = 'rejected') as rejected_batch_count
    from audit
    group by system
),

quarantined as (
    select system, count(*) as quarantine_record_count, max(quarantined_at) as last_quarantined_at
    from quarantine
    group by system
),

final as (
    select
        coalesce(loads.system, quarantined.system)::text as system,
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
        quarantined.last_quarantined_at::timestamptz as last_quarantined_at
    from loads
    full outer join quarantined on quarantined.system = loads.system
)

select * from final
