{#- Energy per machine and 15 minutes (kWh), UTC, placed on the equipment hierarchy (EAM) and
    in the site's local shift (dim_shift, DST-correct) by the reading's start. Malformed EMS
    files never reach raw, so their kWh is absent here. -#}
with readings as (
    select * from {{ ref('stg_ems__meter_readings') }}
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

placed as (
    {{ assign_shift('located', 'meter_reading_id', 'reading_start_at') }}
),

final as (
    select
        located.meter_reading_id,
        located.meter_id,
        located.equipment_id,
        located.site_code,
        located.line_code,
        located.machine_code,
        placed.shift_id,
        placed.production_date,
        placed.shift_code,
        located.reading_start_at,
        located.reading_end_at,
        located.duration_seconds,
        located.energy_kwh,
        located.source_file,
        located.recorded_at
    from located
    left join placed on placed.meter_reading_id = located.meter_reading_id
)

select * from final
