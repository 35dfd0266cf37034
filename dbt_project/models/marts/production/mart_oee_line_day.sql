{#- OEE per line and local production date: all machines' shifts of the day summed, ratios
    recomputed from the sums. Incremental: the line-days containing a changed machine × shift. -#}
{{
    config(
        materialized='incremental',
        unique_key=['line_code', 'production_date'],
        indexes=[{'columns': ['line_code', 'production_date']}],
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}
{#- rendered always, so the facts are dependencies whether or not an interval is set -#}
{%- set changed_keys_sql = changed_machine_shifts() %}

with oee_shifts as (
    select * from {{ ref('mart_oee_shift') }}
),

{% if interval_is_set() -%}
changed_keys as (
    {{ changed_keys_sql }}
),

{%- endif %}

in_scope as (
    select *
    from oee_shifts
    {% if interval_is_set() -%}
    where (line_code, production_date) in (
        select line_code, production_date from changed_keys
    )
    {%- endif %}
),

final as (
    {{ oee_rollup('in_scope', ['site_code', 'line_code', 'production_date']) }}
)

select * from final
