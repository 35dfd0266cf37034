{#- The batch of the Great Expectations suite scada_sensor_ranges (factory_platform/quality/
    gx_suites.py): one row per machine × tag × UTC hour of fct_tag_reading_hour, in its scope —
    the machine's site (equipment hierarchy) and the production day of the shift the hour starts
    in (macro assign_shift; the local date when no shift contains it). The hour's minimum and
    maximum are pivoted into one column pair per tag kind, `<tag>_min_<unit>` and
    `<tag>_max_<unit>` (null for the other kinds), which the suite checks against the kind's
    physical range. Tags of machines the equipment hierarchy does not know belong to no scope
    and are not here. -#}
{%- set tag_kinds = [
    ('temperature', 'celsius'),
    ('pressure', 'bar'),
    ('vibration', 'mm_per_second'),
    ('power', 'kw'),
    ('counter', 'count'),
] %}

with readings as (
    select * from {{ ref('fct_tag_reading_hour') }}
),

equipment as (
    select * from {{ ref('dim_equipment') }}
),

sites as (
    select * from {{ ref('dim_site') }}
),

site_readings as (
    select
        readings.machine_code || '|' || readings.tag_name || '|'
        || to_char(readings.reading_hour_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')
            as reading_key,
        readings.machine_code,
        readings.tag_name,
        readings.reading_hour_at,
        readings.sample_count,
        readings.min_value,
        readings.max_value,
        equipment.site_code,
        (readings.reading_hour_at at time zone sites.site_timezone)::date as local_date
    from readings
    inner join equipment
        on
            equipment.machine_code = readings.machine_code
            and equipment.hierarchy_level = 'machine'
    inner join sites on sites.site_code = equipment.site_code
),

placed as (
    {{ assign_shift('site_readings', 'reading_key', 'reading_hour_at') }}
),

final as (
    select
        site_readings.site_code,
        coalesce(placed.production_date, site_readings.local_date) as production_day,
        site_readings.reading_key,
        site_readings.machine_code,
        site_readings.tag_name,
        site_readings.reading_hour_at,
        site_readings.sample_count,
    {%- for tag, unit in tag_kinds %}
        case
            when site_readings.tag_name = '{{ tag }}' then site_readings.min_value
        end as {{ tag }}_min_{{ unit }},
        case
            when site_readings.tag_name = '{{ tag }}' then site_readings.max_value
        end as {{ tag }}_max_{{ unit }}{{ ',' if not loop.last }}
    {%- endfor %}
    from site_readings
    left join placed on placed.reading_key = site_readings.reading_key
)

select * from final
