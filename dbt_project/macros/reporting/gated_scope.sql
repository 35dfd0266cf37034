{#- The gate rule for reporting, in one place: a row of `relation` belongs to the scope
    (site_code × `day_column`); only scopes the gate passed or flagged are shown, flagged ones
    marked. Left out: blocked scopes, scopes the gate has not decided yet, and scopes a transform
    run may have rebuilt since the last run whose gate passed (`scope_awaiting_gate`) — their
    rows are newer than any decision about them. Use inside a model that has a CTE
    `scope_status` over ref('scope_status'). -#}
{% macro gated_scope_join(relation, day_column='production_date') %}
    inner join scope_status
        on
            scope_status.site_code = {{ relation }}.site_code
            and scope_status.production_day = {{ relation }}.{{ day_column }}
    where
        scope_status.decision in ('passed', 'flagged')
        and not {{ scope_awaiting_gate(relation ~ '.' ~ day_column) }}
{%- endmacro %}

{% macro gated_scope_flags() %}
        (scope_status.decision = 'flagged') as dq_flagged,
        nullif(array_to_string(scope_status.failing_checks, ', '), '') as dq_failing_checks
{%- endmacro %}

{#- True for a production day a transform run started after the last run that passed its gate
    may have rebuilt: the run is under way, or failed (its gate crashed or never ran). The days
    are those of the run's interval (the load batches' time, UTC) widened by a day each side —
    a site's local production day can start up to a day from the UTC date; a run over
    everything (a manual run, the first one) covers every day; a run over no batch rebuilt
    nothing new. Such days come back with the next run whose gate passes: it takes the failed
    run's batches again (transform_window.py). -#}
{% macro scope_awaiting_gate(day) %}
exists (
        select 1
        from {{ source('ops', 'transform_run') }} as ungated_run
        where
            ungated_run.succeeded_at is null
            and ungated_run.started_at > coalesce(
                (
                    select max(gated_run.started_at)
                    from {{ source('ops', 'transform_run') }} as gated_run
                    where gated_run.succeeded_at is not null
                ),
                '-infinity'::timestamptz
            )
            and (
                ungated_run.interval_start is null
                or (
                    ungated_run.batches > 0
                    and {{ day }} between (ungated_run.interval_start at time zone 'UTC')::date - 1
                    and (ungated_run.interval_end at time zone 'UTC')::date + 1
                )
            )
    )
{%- endmacro %}
