{#- ISO 22400 ratios. A ratio whose denominator is 0 (or null) is NULL, not 0 or an error. -#}
{% macro kpi_ratio(numerator, denominator) -%}
    (({{ numerator }})::double precision / nullif(({{ denominator }})::double precision, 0))
{%- endmacro %}

{#- OEE = availability × effectiveness × quality ratio; 0 when a factor is NULL (no production). -#}
{% macro oee_from_factors(availability, effectiveness, quality_ratio) -%}
    coalesce(({{ availability }}) * ({{ effectiveness }}) * ({{ quality_ratio }}), 0::double precision)
{%- endmacro %}
