{#- Energy intensity per machine × production date × shop-floor signal path (opcua, mqtt,
    modbus): the machine-day's kWh (EMS readings, as mart_energy_intensity has them) over the good
    pieces that path alone counted (fct_machine_signal_shift, summed over the day's shifts it
    delivered). The MES stays the system of record for the good count (mart_energy_intensity,
    beside it here as mes_good_count); this mart shows the figure does not depend on the path
    that carried the counts, and is the figure for a line whose machines report only over OPC UA
    or MQTT. shift_count says how many of the day's shifts the path delivered: a day it covered
    in part has a partial good count. A table, rebuilt with its inputs. -#}
with signal_shifts as (
    select * from {{ ref('fct_machine_signal_shift') }}
),

machine_days as (
    select * from {{ ref('mart_energy_intensity') }}
),

path_days as (
    select
        machine_code,
        production_date,
        signal_path,
        site_code,
        line_code,
        sum(good_count) as good_count,
        count(*) as shift_count
    from signal_shifts
    group by machine_code, production_date, signal_path, site_code, line_code
),

final as (
    select
        path_days.machine_code,
        path_days.production_date,
        path_days.signal_path,
        path_days.site_code,
        path_days.line_code,
        coalesce(machine_days.energy_kwh, 0)::numeric(18, 3) as energy_kwh,
        path_days.good_count::bigint as good_count,
        {{ energy_kwh_per_good_unit('machine_days.energy_kwh', 'path_days.good_count') }}
            as kwh_per_good_unit,
        path_days.shift_count::bigint as shift_count,
        machine_days.good_count::bigint as mes_good_count
    from path_days
    left join machine_days
        on
            machine_days.machine_code = path_days.machine_code
            and machine_days.production_date = path_days.production_date
)

select * from final
