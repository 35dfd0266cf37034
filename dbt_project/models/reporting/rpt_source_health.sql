{#- Source health for operators and the report: per plant system the last load and its lag,
    what was quarantined, and the open incidents (files set aside, waiting or late, answers
    refused, batches failed) with a status — attention when anything is open or refused, else
    ok. Not gated: it describes the platform's intake, not the plant's data. -#}
with source_health as (
    select * from {{ ref('mart_source_health') }}
),

final as (
    select
        system,
        case
            when open_incident_count > 0 or refused_batch_count > 0 or rejected_batch_count > 0
                then 'attention'
            else 'ok'
        end::text as status,
        last_loaded_at,
        load_lag_seconds,
        oldest_watermark_at,
        rows_loaded_count,
        rows_quarantined_count,
        open_incident_count,
        files_set_aside_count,
        files_waiting_count,
        files_late_count,
        answers_refused_count,
        batches_failed_count,
        open_incident_kinds
    from source_health
)

select * from final
