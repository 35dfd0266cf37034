{#- The historian files loaded, one row each: name, loading batch and its interval. Incremental
    models over the samples use it to bound their scans (file ids grow in load order). -#}
with source as (
    select * from {{ source_or_empty('scada', 'tag_values__files') }}
),

renamed as (
    select
        file_id,
        source as file_name,
        batch_id,
        extracted_at,
        interval_start as batch_interval_start,
        interval_end as batch_interval_end,
        rows_loaded as row_count
    from source
)

select * from renamed
