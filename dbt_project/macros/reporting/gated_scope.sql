{#- The gate rule for reporting, in one place: a row of `relation` belongs to the scope
    (site_code × `day_column`); only scopes the gate passed or flagged are shown (blocked and
    not-yet-decided ones are left out), flagged ones marked. Use inside a model that has a CTE
    `scope_status` over source('dq', 'scope_status'). -#}
{% macro gated_scope_join(relation, day_column='production_date') %}
    inner join scope_status
        on
            scope_status.site_code = {{ relation }}.site_code
            and scope_status.production_day = {{ relation }}.{{ day_column }}
    where scope_status.decision in ('passed', 'flagged')
{%- endmacro %}

{% macro gated_scope_flags() %}
        (scope_status.decision = 'flagged') as dq_flagged,
        nullif(array_to_string(scope_status.failing_checks, ', '), '') as dq_failing_checks
{%- endmacro %}
