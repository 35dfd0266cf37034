{#- Energy per machine and 15 minutes (kWh), UTC, placed on the equipment hierarchy (EAM) and
    in the site's local shift (dim_shift, DST-correct) by the reading's start. Malformed EMS
    files never reach raw, so their kWh is absent here.
    Incremental: the readings of the run's data interval (plus lookback) by the meter's own
    clock are merged by meter_reading_id. A file landed late is within the interval of the
    extraction that picked it up (the transform's interval includes the extraction's lookback);
    a backfill re-delivers old hours with their interval. The condition is on a column staging
    deduplicates by, so Postgres applies it before deduplicating: an hour's run does not sort
    the whole history. -#}
{{
    config(
        materialized='incremental',
        unique_key='meter_reading_id',
        indexes=[{'columns': ['meter_reading_id'], 'unique': true}],
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
    )
}}

with readings as (
    select * from {{ ref('stg_ems__meter_readings') }}
    where {{ changed_in_interval('reading_start_at') }}
),

equipment as (
    select * from {{ ref('dim_equipment') }}
),

sites as (
    select * from {{ ref('plant_sites') }}
),

shifts as (
    select * from {{ ref('dim_shift') }}
),

located as (
    select
        readings.*,
        equipment.equipment_id,
        equipment.site_code,
        equipment.line_code
    from readings
    left join equipment on equipment.equipment_code = readings.machine_code
),

{# The shift containing the reading's start (the rule of assign_shift): candidates are the
    local date ± 1 day, unnested per reading so that the join to dim_shift is an equality (hash)
    join on site and date plus a range check, whatever the planner guesses about how many
    readings an interval holds; the one candidate that matches is kept (none: shift columns
    null, the reading is kept). -#}
candidates as (
    select
        located.*,
        unnest(array[-1, 0, 1]) + (located.reading_start_at at time zone sites.timezone)::date
            as candidate_date
    from located
    left join sites on sites.site_code = located.site_code
),

placed as (
    select distinct on (candidates.meter_reading_id)
        candidates.*,
        shifts.shift_id,
        shifts.production_date,
        shifts.shift_code
    from candidates
    left join shifts
        on
            shifts.site_code = candidates.site_code
            and shifts.production_date = candidates.candidate_date
            and shifts.shift_start_at <= candidates.reading_start_at
            and shifts.shift_end_at > candidates.reading_start_at
    order by candidates.meter_reading_id, shifts.shift_id nulls last
),

final as (
    select
        meter_reading_id,
        meter_id,
        equipment_id,
        site_code,
        line_code,
        machine_code,
        shift_id,
        production_date,
        shift_code,
        reading_start_at,
        reading_end_at,
        duration_seconds,
        energy_kwh,
        source_file,
        extracted_at
    from placed
)

select * from final
