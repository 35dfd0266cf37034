{#- A raw source table, or an empty relation of the same declared columns while the table does
    not exist yet (a system not extracted so far: a fresh deployment, or a test that loads only
    some systems). The columns and types come from the source's yml (`data_type`), plus the
    batch metadata every raw table carries. The dependency on the source is kept for lineage. -#}
{% macro source_or_empty(source_name, table_name) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if not execute or load_relation(relation) is not none -%}
        {{ relation }}
    {%- else -%}
        {%- set node = graph.sources['source.' ~ project_name ~ '.' ~ source_name ~ '.' ~ table_name] -%}
        {%- set columns = [] -%}
        {%- for column in node.columns.values() -%}
            {%- do columns.append('null::' ~ (column.data_type or 'text') ~ ' as ' ~ adapter.quote(column.name)) -%}
        {%- endfor -%}
        {%- for name, data_type in [('_batch_id', 'text'), ('_extracted_at', 'timestamptz'), ('_source', 'text'), ('_interval_start', 'timestamptz'), ('_interval_end', 'timestamptz'), ('_extra', 'jsonb')] -%}
            {%- if name not in node.columns -%}
                {%- do columns.append('null::' ~ data_type ~ ' as ' ~ name) -%}
            {%- endif -%}
        {%- endfor -%}
        (select {{ columns | join(', ') }} where false) as {{ table_name }}
    {%- endif -%}
{%- endmacro %}
