{#- WMS goods movements, one row per movement_id (a re-sent file collapses to one row), in UTC:
    the local wall time is placed in the site's zone (seed plant_sites); in the repeated hour of
    the DST night the candidate instant in the file name's UTC hour wins. The material code is
    kept as sent (ERP number or legacy `L-<number>`; mapped in conformed). -#}
with source as (
    select * from {{ source_or_empty('wms', 'movements') }}
),

sites as (
    select * from {{ ref('plant_sites') }}
),

latest as (
    select distinct on (movement_id) *
    from source
    order by movement_id asc, _extracted_at desc, _source desc
),

placed as (
    select
        latest.*,
        latest.event_time at time zone sites.timezone as default_utc_at,
        sites.timezone,
        to_timestamp(
            substring(latest._source from '(\d{8}T\d{2})00Z'), 'YYYYMMDD"T"HH24'
        )::timestamp at time zone 'UTC' as file_hour_at
    from latest
    left join sites on sites.site_code = latest.site
),

renamed as (
    select
        movement_id,
        upper(movement_type) as movement_type,
        site as site_code,
        material as source_material_code,
        material_desc as material_description,
        lot as lot_id,
        case lower(unit) when 'g' then qty / 1000 else qty end::numeric as movement_quantity,
        case lower(unit) when 'g' then 'kg' when 'kg' then 'kg' else upper(unit) end as quantity_unit,
        from_loc as from_location_code,
        to_loc as to_location_code,
        reference as reference_number,
        case
            when file_hour_at is null then default_utc_at
            when date_trunc('hour', default_utc_at) = file_hour_at then default_utc_at
            when date_trunc('hour', default_utc_at - interval '1 hour') = file_hour_at
                and (default_utc_at - interval '1 hour') at time zone timezone = event_time
                then default_utc_at - interval '1 hour'
            when date_trunc('hour', default_utc_at + interval '1 hour') = file_hour_at
                and (default_utc_at + interval '1 hour') at time zone timezone = event_time
                then default_utc_at + interval '1 hour'
            else default_utc_at
        end as movement_at,
        event_time as movement_at_local,
        (event_time)::date as movement_date,
        _source as source_file_name,
        _extracted_at as extracted_at
    from placed
)

select * from renamed
