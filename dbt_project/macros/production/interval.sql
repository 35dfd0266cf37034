{#- The data interval an incremental run processes (UTC, half-open [start, end)), widened at the
    start by `interval_lookback_hours` (default 2) so records landed late by a lookback
    extraction are caught.
    Where it comes from, in this order:
    - the vars a developer, a test or a backfill passes:
        --vars '{interval_start: "2026-10-19T00:00:00Z", interval_end: "2026-10-20T00:00:00Z"}'
    - the interval transform_dbt recorded for its run in ops.transform_run (the windows its load
      batches read since its last successful run, their lookbacks included already; the 2 h are
      a margin): its dbt process names the run in the environment variable
      SFDP_TRANSFORM_RUN_ID, and `transform_interval` reads the row at execution time. Read only
      under `execute`, never while dbt parses, so a run's id (unlike per-run --vars) leaves
      dbt's partial parsing intact: each dbt start reuses target/partial_parse.msgpack.
    Neither (or empty, or a run recorded as processing everything): everything is processed.
    The interval applies only under is_incremental(), as dbt intends: a model's first build, a
    build after its table was dropped and a --full-refresh process everything whatever interval
    is set, so no table is ever born partial.
    The interval selects records by the time their source recorded them (change-feed
    `updated_at`, here `recorded_at`), not by business time: a late confirmation for an old shift
    is found in the interval it arrived in, and the shift it belongs to is recomputed whole. -#}

{#- The interval as {'start': ISO string or none, 'end': ISO string or none} (see above). -#}
{% macro transform_interval() -%}
    {%- if var('interval_start', none) or var('interval_end', none) -%}
        {{ return({'start': var('interval_start', none) or none,
                   'end': var('interval_end', none) or none}) }}
    {%- endif -%}
    {%- set run_id = env_var('SFDP_TRANSFORM_RUN_ID', '') if execute else '' -%}
    {%- if not run_id -%}
        {{ return({'start': none, 'end': none}) }}
    {%- endif -%}
    {%- set run_table = graph.sources['source.' ~ project_name ~ '.ops.transform_run'] -%}
    {%- set relation = api.Relation.create(database=run_table.database,
        schema=run_table.schema, identifier=run_table.identifier) -%}
    {%- set recorded = run_query("select interval_start, interval_end from " ~ relation
        ~ " where run_id = '" ~ (run_id | replace("'", "''")) ~ "'") -%}
    {%- if recorded.rows | length == 0 -%}
        {{ exceptions.raise_compiler_error("SFDP_TRANSFORM_RUN_ID names run " ~ run_id
            ~ ", which ops.transform_run does not hold (transform_dbt's data_interval task"
            ~ " records it before dbt starts)") }}
    {%- endif -%}
    {%- set row = recorded.rows[0] -%}
    {{ return({'start': row[0].isoformat() if row[0] is not none else none,
               'end': row[1].isoformat() if row[1] is not none else none}) }}
{%- endmacro %}

{% macro interval_is_set() -%}
    {%- if not is_incremental() -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set interval = transform_interval() -%}
    {{ return(true if (interval.start or interval.end) else false) }}
{%- endmacro %}

{#- The interval's bounds as SQL timestamptz expressions (the start widened by the lookback),
    or none when there is no interval or the model is not built incrementally. -#}
{% macro interval_lower_bound() -%}
    {%- if is_incremental() -%}
        {%- set interval_start = transform_interval().start -%}
        {%- if interval_start -%}
            {{ return("'" ~ interval_start ~ "'::timestamptz - interval '"
                ~ (var('interval_lookback_hours', 2) | float) ~ " hours'") }}
        {%- endif -%}
    {%- endif -%}
    {{ return(none) }}
{%- endmacro %}

{% macro interval_upper_bound() -%}
    {%- if is_incremental() -%}
        {%- set interval_end = transform_interval().end -%}
        {%- if interval_end -%}
            {{ return("'" ~ interval_end ~ "'::timestamptz") }}
        {%- endif -%}
    {%- endif -%}
    {{ return(none) }}
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
