{#- `analyze <table>` for a model or seed dbt just built as a table (post-hook of every model and
    seed, dbt_project.yml), nothing for a view. PostgreSQL's autovacuum analyses a table only
    after 50 rows plus 10 % of it changed: a small dimension (sites, equipment, shift patterns)
    is never analysed, and the planner, taking it for one row, joins its dependants by nested
    loops — measured on the quality gate's row_counts_vs_history batch: the shift placement of
    every tag hour repeated 360 times, 6.9 s, 0.37 s once the dimensions were analysed (366 s in
    a transform run on a busy machine). The table is new or rewritten by the build, so its
    statistics are the build's to make. -#}
{% macro analyze_built_table() -%}
    {%- if config.get('materialized') in ('table', 'incremental', 'seed') -%}
        analyze {{ this }}
    {%- endif -%}
{%- endmacro %}
