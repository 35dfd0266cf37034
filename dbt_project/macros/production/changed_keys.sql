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

{#- The recompute scaffolding of the marts that rebuild whole keys (delete+insert on
    `key_columns`): CTE `changed_keys` from `changed_keys_sql` (rows holding at least
    `key_columns`), then one CTE per entry of `scoped` ({new CTE name: CTE it reads}) keeping
    only the rows of a changed key. Rendered as CTEs each followed by a comma. In a full build
    (no interval, a first build, a --full-refresh) `changed_keys` is left out and every row is
    in scope. Callers pass `changed_keys_sql` rendered before the `with` so its refs are
    dependencies in every build. -#}
{% macro recompute_changed_keys(changed_keys_sql, key_columns, scoped) -%}
    {%- set recompute = interval_is_set() -%}
    {%- set keys = key_columns | join(', ') -%}
    {%- if recompute %}
changed_keys as (
    {{ changed_keys_sql }}
),
    {%- endif %}
    {%- for name, relation in scoped.items() %}

{{ name }} as (
    select *
    from {{ relation }}
    {%- if recompute %}
    where ({{ keys }}) in (select {{ keys }} from changed_keys)
    {%- endif %}
),
    {%- endfor %}
{%- endmacro %}
