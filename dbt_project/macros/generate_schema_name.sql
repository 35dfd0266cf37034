{#- Where a model (seed, snapshot, stored test failures) is built.
    Production targets — `warehouse` (profiles.yml: the command line, the gate's dbt step) and
    `airflow` (Cosmos' tasks in transform_dbt) — use the layer schemas as named (staging,
    conformed, marts, publish, reporting, dq_failures, snapshots), not prefixed with the
    target's schema. Every other target (`dev`: a developer's builds, make dbt-dev / dbt-ci)
    builds the same layers under its own prefix, e.g. dev_anna_staging, dev_anna_marts: a dev
    build never writes what publish_erp, the gate or the reports read. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if target.name in production_targets() -%}
        {{ custom_schema_name | trim if custom_schema_name else target.schema }}
    {%- elif custom_schema_name -%}
        {{ dev_schema_prefix() }}_{{ custom_schema_name | trim }}
    {%- else -%}
        {{ dev_schema_prefix() }}
    {%- endif -%}
{%- endmacro %}

{#- The targets that build the production schemas. -#}
{% macro production_targets() -%}
    {{ return(['warehouse', 'airflow']) }}
{%- endmacro %}

{#- A non-production target's prefix: its schema (DBT_DEV_SCHEMA_PREFIX, default dev_<OS user>)
    lowercased, anything but [a-z0-9_] made `_`, always starting with `dev_` — so no prefix
    can name a production schema, and the transformer role may create it (roles.py lets it
    create `dev_*` schemas, nothing else). -#}
{% macro dev_schema_prefix() -%}
    {%- set prefix = modules.re.sub('[^a-z0-9_]+', '_', target.schema | trim | lower) -%}
    {{ return(prefix if prefix.startswith('dev_') else 'dev_' ~ prefix) }}
{%- endmacro %}
