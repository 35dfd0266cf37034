{#- Energy intensity per machine × production date (the site's local shift date): kWh of the
    day's shifts (EMS 15-minute readings; malformed files contribute nothing), good pieces of the
    day's confirmations (quarantined confirmations never reach raw) and kWh per good unit (NULL
    without good pieces). A machine-day with energy but no production, or the reverse, has a row. -#}
with equipment as (
    select * from {{ ref('dim_equipment') }}
),

energy_readings as (
    select * from {{ ref('fct_energy_reading') }}
),

confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
),

energy as (
    select
        machine_code,
        production_date,
        sum(energy_kwh) as energy_kwh,
        count(*) as reading_count
    from energy_readings
    where production_date is not null
    group by machine_code, production_date
),

good as (
    select
        machine_code,
        production_date,
        sum(good_count) as good_count
    from confirmations
    where production_date is not null
    group by machine_code, production_date
),

machine_days as (
    select
        machine_code,
        production_date
    from energy
    union
    select
        machine_code,
        production_date
    from good
),

final as (
    select
        machine_days.machine_code,
        machine_days.production_date,
        equipment.site_code,
        equipment.line_code,
        coalesce(energy.energy_kwh, 0)::numeric(18, 3) as energy_kwh,
        coalesce(good.good_count, 0)::bigint as good_count,
        {{ energy_kwh_per_good_unit('energy.energy_kwh', 'good.good_count') }} as kwh_per_good_unit,
        coalesce(energy.reading_count, 0)::bigint as reading_count
    from machine_days
    left join energy
        on
            energy.machine_code = machine_days.machine_code
            and energy.production_date = machine_days.production_date
    left join good
        on
            good.machine_code = machine_days.machine_code
            and good.production_date = machine_days.production_date
    left join equipment on equipment.equipment_code = machine_days.machine_code
)

select * from final
