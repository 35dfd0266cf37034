{#- Sum the ISO 22400 elements and losses of mart_oee_shift rows to a coarser grain, and
    recompute the ratios from the sums (never an average of shift ratios). `grain` lists the
    group-by columns; the caller filters the input CTE. -#}
{% macro oee_rollup(input_cte, grain) -%}
    {%- set summed = [
        'shift_seconds', 'pbt_seconds', 'apt_seconds', 'pri_seconds', 'pq', 'gq', 'sq', 'rq',
        'planned_downtime_seconds', 'break_seconds', 'preventive_maintenance_seconds',
        'unplanned_downtime_seconds', 'mechanical_failure_seconds', 'electrical_failure_seconds',
        'tool_breakage_seconds', 'material_jam_seconds', 'other_unplanned_downtime_seconds',
        'setup_seconds', 'idle_seconds', 'confirmation_count',
    ] -%}
    with sums as (
        select
            {% for column in grain -%}
            {{ column }},
            {% endfor -%}
            {% for column in summed -%}
            sum({{ column }}) as {{ column }},
            {% endfor -%}
            count(*) as machine_shift_count
        from {{ input_cte }}
        group by {{ grain | join(', ') }}
    ),

    ratios as (
        select
            sums.*,
            {{ kpi_ratio('apt_seconds', 'pbt_seconds') }} as availability,
            {{ kpi_ratio('pri_seconds', 'apt_seconds') }} as effectiveness,
            {{ kpi_ratio('gq', 'pq') }} as quality_ratio
        from sums
    )

    select
        {% for column in grain -%}
        {{ column }},
        {% endfor -%}
        {% for column in summed[:3] -%}
        {{ column }}::bigint as {{ column }},
        {% endfor -%}
        pri_seconds::numeric(18, 6) as pri_seconds,
        pq::bigint as pq,
        gq::bigint as gq,
        sq::bigint as sq,
        rq::bigint as rq,
        availability,
        effectiveness,
        quality_ratio,
        {{ oee_from_factors('availability', 'effectiveness', 'quality_ratio') }} as oee,
        {% for column in summed[8:] -%}
        {{ column }}::bigint as {{ column }},
        {% endfor -%}
        machine_shift_count::bigint as machine_shift_count
    from ratios
{%- endmacro %}
