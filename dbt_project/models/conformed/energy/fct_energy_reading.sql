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

located as (
    select
        readings.*,
        equipment.equipment_id,
        equipment.site_code,
        equipment.line_code
    from readings
    left join equipment on equipment.equipment_code = readings.machine_code
),

{# The shift containing the reading's start; a reading no shift contains (or of a machine the
    EAM does not know) is kept with null shift columns. -#}
placed_shifts as (
    {{ assign_shift('located', 'meter_reading_id', 'reading_start_at') }}
),

placed as (
    select
        located.*,
        placed_shifts.shift_id,
        placed_shifts.production_date,
        placed_shifts.shift_code
    from located
    left join placed_shifts on placed_shifts.meter_reading_id = located.meter_reading_id
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
