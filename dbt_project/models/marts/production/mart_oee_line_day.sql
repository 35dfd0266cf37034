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

{{ recompute_changed_keys(changed_keys_sql, ['line_code', 'production_date'], {'in_scope': 'oee_shifts'}) }}

final as (
    {{ oee_rollup('in_scope', ['site_code', 'line_code', 'production_date']) }}
)

select * from final
