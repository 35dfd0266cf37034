{#- The local shift calendar of every site: each site's shift pattern laid over a date spine and
    converted to UTC with the site's time zone. A shift's length is whatever the local clock
    makes it, so a DST day has a 7 h or 9 h shift (Europe/Berlin, 2026-10-24 S3: 9 h).
    The spine's range comes from the vars shift_calendar_start_date / shift_calendar_end_date.
    Indexed on (site, start): macro assign_shift finds an instant's shift by one probe of it
    (a site's shifts never overlap, so the pair is unique). -#}
{{
    config(
        indexes=[{'columns': ['site_code', 'shift_start_at'], 'unique': true}],
    )
}}

with sites as (
    select * from {{ ref('plant_sites') }}
),

shift_patterns as (
    select * from {{ ref('shift_patterns') }}
),

calendar_dates as (
    select calendar_day::date as production_date
    from generate_series(
            date '{{ var("shift_calendar_start_date", "2020-01-01") }}',
            date '{{ var("shift_calendar_end_date", "2035-12-31") }}',
            interval '1 day'
        ) as spine (calendar_day)
),

local_shifts as (
    select
        sites.site_code,
        sites.timezone as site_timezone,
        calendar_dates.production_date,
        shift_patterns.shift_code,
        shift_patterns.shift_name_en,
        shift_patterns.shift_name_zh,
        calendar_dates.production_date + shift_patterns.start_local_time as shift_start_local,
        calendar_dates.production_date
        + case
            when shift_patterns.end_local_time <= shift_patterns.start_local_time then 1
            else 0
        end
        + shift_patterns.end_local_time as shift_end_local
    from sites
    inner join shift_patterns on shift_patterns.site_code = sites.site_code
    cross join calendar_dates
),

final as (
    select
        site_code || '-' || to_char(production_date, 'YYYYMMDD') || '-' || shift_code as shift_id,
        site_code,
        production_date,
        shift_code,
        shift_name_en,
        shift_name_zh,
        site_timezone,
        shift_start_local,
        shift_end_local,
        shift_start_local at time zone site_timezone as shift_start_at,
        shift_end_local at time zone site_timezone as shift_end_at,
        extract(
            epoch from
            (shift_end_local at time zone site_timezone) - (shift_start_local at time zone site_timezone)
        )::bigint as shift_seconds
    from local_shifts
)

select * from final
