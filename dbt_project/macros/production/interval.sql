{#- The data interval an incremental run processes, from the vars a DAG run or a backfill passes:
      --vars '{interval_start: "2026-10-19T00:00:00Z", interval_end: "2026-10-20T00:00:00Z"}'
    (UTC ISO strings, half-open [start, end)), widened at the start by `interval_lookback_hours`
    (default 2) so records landed late by a lookback extraction are caught. transform_dbt passes
    the windows its load batches read since its last successful run (their lookbacks included
    already; the 2 h are a margin). Without the vars (or empty), everything is processed.
    The interval applies only under is_incremental(), as dbt intends: a model's first build, a
    build after its table was dropped and a --full-refresh process everything whatever vars are
    set, so no table is ever born partial.
    The interval selects records by the time their source recorded them (change-feed
    `updated_at`, here `recorded_at`), not by business time: a late confirmation for an old shift
    is found in the interval it arrived in, and the shift it belongs to is recomputed whole. -#}

{% macro interval_is_set() -%}
    {{ return(true if ((var('interval_start', none) or var('interval_end', none))
        and is_incremental()) else false) }}
{%- endmacro %}

{#- The interval's bounds as SQL timestamptz expressions (the start widened by the lookback),
    or none when the var is not set or the model is not built incrementally. -#}
{% macro interval_lower_bound() -%}
    {%- set interval_start = var('interval_start', none) -%}
    {%- if interval_start and is_incremental() -%}
        {{ return("'" ~ interval_start ~ "'::timestamptz - interval '"
            ~ (var('interval_lookback_hours', 2) | float) ~ " hours'") }}
    {%- endif -%}
    {{ return(none) }}
{%- endmacro %}

{% macro interval_upper_bound() -%}
    {%- set interval_end = var('interval_end', none) -%}
    {{ return(("'" ~ interval_end ~ "'::timestamptz") if (interval_end and is_incremental()) else none) }}
{%- endmacro %}

{#- `column` within the interval (its bounds as above), or true: everything. -#}
{% macro changed_in_interval(column) -%}
    {%- set lower_bound = interval_lower_bound() -%}
    {%- set upper_bound = interval_upper_bound() -%}
    {%- set conditions = [] -%}
    {%- if lower_bound -%}
        {%- do conditions.append(column ~ " >= " ~ lower_bound) -%}
    {%- endif -%}
    {%- if upper_bound -%}
        {%- do conditions.append(column ~ " < " ~ upper_bound) -%}
    {%- endif -%}
    {%- if conditions -%}
        ({{ conditions | join(' and ') }})
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}
