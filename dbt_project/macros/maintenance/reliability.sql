{#- Reliability KPIs per machine. A machine without failures has neither (NULL, not 0 or ∞). -#}

{#- MTBF = running seconds / failures (mean operating time between failures). -#}
{% macro maintenance_mtbf_seconds(running_seconds, failure_count) -%}
    {{ kpi_ratio('coalesce(' ~ running_seconds ~ ', 0)', failure_count) }}
{%- endmacro %}

{#- MTTR = unplanned downtime seconds / failures (mean time to repair). -#}
{% macro maintenance_mttr_seconds(downtime_seconds, failure_count) -%}
    {{ kpi_ratio('coalesce(' ~ downtime_seconds ~ ', 0)', failure_count) }}
{%- endmacro %}
