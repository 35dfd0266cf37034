{#- Energy intensity (kWh per good unit) per line and local production date, gated like
    rpt_oee_line_day (blocked and undecided scopes hidden, flagged ones marked). -#}
with energy_line_days as (
    select * from {{ ref('mart_energy_intensity_line_day') }}
),

scope_status as (
    select * from {{ ref('scope_status') }}
),

final as (
    select
        energy_line_days.site_code,
        energy_line_days.line_code,
        energy_line_days.production_date,
        energy_line_days.energy_kwh,
        energy_line_days.good_count,
        energy_line_days.kwh_per_good_unit,
        {{ gated_scope_flags() }}
    from energy_line_days
    {{ gated_scope_join('energy_line_days') }}
)

select * from final
