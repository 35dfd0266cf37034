{#- SCADA tag readings aggregated per machine × tag × UTC hour (the minute samples stay in
    raw; a re-delivered sample counts once, its latest delivery). Incremental: the hours with
    samples in the run's data interval (plus lookback) are recomputed whole and merged — a
    backfill of an old interval re-delivers its files and recomputes its hours.
    The samples are read from the historian files loaded by a batch whose interval reaches
    into the first of those hours, or later (file ids grow in load order and the raw rows are
    partitioned by file id): Postgres skips the older files' partitions, so an hour's run
    reads a constant slice however long the history. -#}
{{
    config(
        materialized='incremental',
        unique_key=['machine_code', 'tag_name', 'reading_hour_at'],
        indexes=[{'columns': ['machine_code', 'tag_name', 'reading_hour_at'], 'unique': true}],
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
    )
}}

-- depends_on: {{ ref('stg_scada__tag_value_files') }}
{#- (read only in an incremental run with an interval, so dbt's parse does not see the ref) -#}
{%- set lower_bound = interval_lower_bound() %}
{%- set upper_bound = interval_upper_bound() %}

with
{%- if lower_bound %}
    first_file as (
        select min(file_id) as file_id
        from {{ ref('stg_scada__tag_value_files') }}
        where batch_interval_end > date_trunc('hour', {{ lower_bound }})
    ),
{%- endif %}

readings as (
    select * from {{ ref('stg_scada__tag_values') }}
    where
        true
        {% if lower_bound %}
            and file_id >= (select first_file.file_id from first_file)
            and reading_at >= date_trunc('hour', {{ lower_bound }})
        {% endif %}
        {% if upper_bound %}
            -- to the end of the hour the interval ends in
            and reading_at < (
                date_trunc('hour', {{ upper_bound }} - interval '1 microsecond') + interval '1 hour'
            )
        {% endif %}
),

{%- if lower_bound %}

    -- an interval's hours: the readings above start at its first file, so an hour is
    -- recomputed only when the run holds its samples (without an interval every hour is
    -- whole, and this join would only sort every sample once more: 7 s of a full build)
    changed_hours as (
        select distinct
            machine_code,
            tag_name,
            date_trunc('hour', reading_at) as reading_hour_at
        from readings
        where {{ changed_in_interval('reading_at') }}
    ),
{%- endif %}

samples as (
    select distinct on (readings.machine_code, readings.tag_name, readings.reading_at)
        readings.*,
        date_trunc('hour', readings.reading_at) as reading_hour_at
    from readings
    {%- if lower_bound %}
    inner join changed_hours
        on changed_hours.machine_code = readings.machine_code
            and changed_hours.tag_name = readings.tag_name
            and changed_hours.reading_hour_at = date_trunc('hour', readings.reading_at)
    {%- endif %}
    order by readings.machine_code asc, readings.tag_name asc, readings.reading_at asc, readings.extracted_at desc
),

final as (
    select
        machine_code,
        tag_name,
        reading_hour_at,
        min(reading_unit) as reading_unit,
        count(*) as sample_count,
        min(reading_value) as min_value,
        max(reading_value) as max_value,
        avg(reading_value) as avg_value,
        (array_agg(reading_value order by reading_at))[1] as first_value,
        (array_agg(reading_value order by reading_at desc))[1] as last_value,
        min(reading_at) as first_reading_at,
        max(reading_at) as last_reading_at,
        count(*) filter (where reading_quality is distinct from 'GOOD') as not_good_sample_count
    from samples
    group by machine_code, tag_name, reading_hour_at
)

select * from final
