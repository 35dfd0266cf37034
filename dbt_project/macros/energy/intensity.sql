{#- Energy intensity: kWh per good unit; NULL when nothing good was produced (no division by 0,
    and a machine that only consumed energy is not "infinitely" intense but undefined). -#}
{% macro energy_kwh_per_good_unit(energy_kwh, good_count) -%}
    {{ kpi_ratio('coalesce(' ~ energy_kwh ~ ', 0)', good_count) }}
{%- endmacro %}
