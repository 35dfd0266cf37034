{#- Energy intensity per line × production date: the machine-days summed, kWh per good unit
    recomputed from the sums (never an average of machine ratios). -#}
with machine_days as (
    select * from {{ ref('mart_energy_intensity') }}
),

sums as (
    select
        site_code,
        line_code,
        production_date,
        sum(energy_kwh) as energy_kwh,
        sum(good_count) as good_count,
        count(*) as machine_count
    from machine_days
    group by site_code, line_code, production_date
),

final as (
    select
        line_code,
        production_date,
        site_code,
        energy_kwh::numeric(18, 3) as energy_kwh,
        good_count::bigint as good_count,
        {{ energy_kwh_per_good_unit('energy_kwh', 'good_count') }} as kwh_per_good_unit,
        machine_count::bigint as machine_count
    from sums
)

select * from final
