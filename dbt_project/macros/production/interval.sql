{#- The data interval an incremental run processes, from the vars a DAG run or a backfill passes:
      --vars '{interval_start: "2026-10-19T00:00:00Z", interval_end: "2026-10-20T00:00:00Z"}'
    (UTC ISO strings, half-open [start, end)), widened at the start by `interval_lookback_hours`
    (default 2, the extraction's own lookback) so records landed late by a lookback extraction
    are caught. Without the vars (or empty), everything is processed.
    The interval selects records by the time their source recorded them (change-feed
    `updated_at`, here `recorded_at`), not by business time: a late confirmation for an old shift
    is found in the interval it arrived in, and the shift it belongs to is recomputed whole. -#}

{% macro interval_is_set() -%}
    {{ return(true if (var('interval_start', none) or var('interval_end', none)) else false) }}
{%- endmacro %}

{% macro changed_in_interval(column) -%}
    {%- set interval_start = var('interval_start', none) -%}
    {%- set interval_end = var('interval_end', none) -%}
    {%- set conditions = [] -%}
    {%- if interval_start -%}
        {%- do conditions.append(column ~ " >= '" ~ interval_start ~ "'::timestamptz - interval '"
            ~ (var('interval_lookback_hours', 2) | float) ~ " hours'") -%}
    {%- endif -%}
    {%- if interval_end -%}
        {%- do conditions.append(column ~ " < '" ~ interval_end ~ "'::timestamptz") -%}
    {%- endif -%}
    {%- if conditions -%}
        ({{ conditions | join(' and ') }})
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}
