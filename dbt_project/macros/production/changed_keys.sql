{#- The machine × shift keys whose inputs changed within the run's data interval: a state
    interval, a confirmation or a confirmation's operation recorded in it. Production marts
    recompute exactly these keys (or the days / lines that contain them) from the complete
    facts, so a late record for an old shift rebuilds that whole shift, and a full refresh and
    any sequence of incremental runs end with the same rows. -#}
{% macro changed_machine_shifts() -%}
    select machine_code, line_code, production_date, shift_code
    from {{ ref('fct_machine_state_interval') }}
    where {{ changed_in_interval('recorded_at') }}
    union
    select machine_code, line_code, production_date, shift_code
    from {{ ref('fct_operation_confirmation') }}
    where
        {{ changed_in_interval('recorded_at') }}
        or {{ changed_in_interval('operation_recorded_at') }}
{%- endmacro %}
