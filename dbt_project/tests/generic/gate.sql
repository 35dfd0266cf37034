{#- A quality-gate check on a publish model: the rows for which `fails_when` holds fail it.
    Failing rows are stored whole (store_failures), so the gate can place each one in its scope
    (site_code × production_date) and name it by `business_key`. Severity error blocks those
    scopes from publishing, warn publishes them with a flag. Tagged `gate`: these checks run in
    the gate step, not with the model's build, so one bad scope does not stop the others. -#}
{% test gate(model, fails_when) %}
{{ config(store_failures=true, tags=['gate']) }}
select *
from {{ model }}
where {{ fails_when }}
{% endtest %}
