{#- The publish models are rewritten only while holding the publish-models advisory lock (key
    factory_platform.quality.checked.PUBLISH_MODELS_LOCK), taken in the model's transaction by a
    pre-hook and released at its commit: the quality gate's dbt step and publish_erp's posting
    task hold the same lock, so a publish table never changes while the gate checks it or the
    publisher plans from it. -#}
{% macro publish_models_lock() -%}
select pg_advisory_xact_lock(2026121201)
{%- endmacro %}
