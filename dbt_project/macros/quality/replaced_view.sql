{#- A view replaced in place (`create or replace view`), for a view that other views are built on
    (dq.scope_status: every gated reporting view reads it). dbt's `view` materialization renames
    the old view away and drops it with CASCADE, which would drop those views until dbt builds
    them again later in the run; replacing keeps the relation, its dependants and its grants.
    PostgreSQL replaces a view while its columns keep their names, types and order (new ones
    may be appended): to change a column, drop the view (cascade) and build again. -#}
{%- materialization replaced_view, adapter='postgres' -%}
    {%- set target_relation = this.incorporate(type='view') -%}

    {{ run_hooks(pre_hooks, inside_transaction=False) }}
    {{ run_hooks(pre_hooks, inside_transaction=True) }}

    {% call statement('main') -%}
        create or replace view {{ target_relation }} as (
            {{ sql }}
        )
    {%- endcall %}

    {% do persist_docs(target_relation, model) %}

    {{ run_hooks(post_hooks, inside_transaction=True) }}
    {{ adapter.commit() }}
    {{ run_hooks(post_hooks, inside_transaction=False) }}

    {{ return({'relations': [target_relation]}) }}
{%- endmaterialization -%}
