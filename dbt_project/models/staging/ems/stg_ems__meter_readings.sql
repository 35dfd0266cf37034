{#- EMS 15-minute meter readings in UTC, one row per meter and interval: a file loaded again
    (re-run, lookback) collapses to its newest load. -#}
with source as (
    select * from {{ source_or_empty('ems', 'meter_readings') }}
),

latest as (
    select distinct on (meter_id, interval_start) *
    from source
    order by meter_id asc, interval_start asc, _extracted_at desc, _batch_id desc
),

renamed as (
    select
        meter_id || '|' || to_char(interval_start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            as meter_reading_id,
        meter_id,
        machine_code,
        interval_start as reading_start_at,
        interval_end as reading_end_at,
        extract(epoch from interval_end - interval_start)::bigint as duration_seconds,
        kwh as energy_kwh,
        _source as source_file,
        _extracted_at as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
