{#- The counter-increment rule every shop-floor signal path shares, written once. `readings_cte`
    holds one row per reading with `machine_code`, `counter` and `counter_value` (cumulative
    pieces); each row comes back with the previous reading's value of the same machine and
    counter (ordered by `at_column`) and:
      - increment: the pieces since that reading: value - previous; null for a counter's first
        reading (the pieces before it are unknown);
      - is_rollover: the value fell because the counter wrapped at `rollover_modulus` — only
        when the path's counters roll over (a modulus given): the previous value within
        `rollover_margin` of the modulus and the wrapped difference (value - previous) mod
        modulus within the margin too; its increment is that wrapped difference;
      - is_counter_reset: the value fell otherwise (a restart, a wrong read). Its increment is
        the value itself when `reset_counts_from_zero` (the counter restarted from 0: OPC UA's
        UInt64 counters never roll over), else null (the rule cannot tell how many pieces the
        fall hides; the next reading counts from this value).
    The rule is the parameters; a path states its own (see the staging models that call it). -#}
{% macro counter_increments(
    readings_cte,
    at_column,
    rollover_modulus=none,
    rollover_margin=none,
    reset_counts_from_zero=true
) -%}
    {%- set went_back = 'with_previous.counter_value < with_previous.previous_value' -%}
    {%- if rollover_modulus is none -%}
        {%- set wrapped = 'false' -%}
    {%- else -%}
        {%- set wrapped = '(' ~ went_back
            ~ ' and with_previous.previous_value >= ' ~ rollover_modulus ~ ' - ' ~ rollover_margin
            ~ ' and with_previous.counter_value + ' ~ rollover_modulus
            ~ ' - with_previous.previous_value <= ' ~ rollover_margin ~ ')' -%}
    {%- endif -%}
    select
        with_previous.*,
        case
            when with_previous.previous_value is null then null
            {%- if rollover_modulus is not none %}
            when {{ wrapped }} then with_previous.counter_value + {{ rollover_modulus }} - with_previous.previous_value
            {%- endif %}
            when {{ went_back }} then {{ 'with_previous.counter_value' if reset_counts_from_zero else 'null' }}
            else with_previous.counter_value - with_previous.previous_value
        end as increment,
        coalesce({{ wrapped }}, false) as is_rollover,
        coalesce({{ went_back }} and not {{ wrapped }}, false) as is_counter_reset
    from (
        select
            {{ readings_cte }}.*,
            lag({{ readings_cte }}.counter_value) over (
                partition by {{ readings_cte }}.machine_code, {{ readings_cte }}.counter
                order by {{ readings_cte }}.{{ at_column }}
            ) as previous_value
        from {{ readings_cte }}
    ) as with_previous
{%- endmacro %}
