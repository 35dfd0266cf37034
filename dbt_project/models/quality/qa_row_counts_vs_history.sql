{#- The batch of the Great Expectations suite row_counts_vs_history (factory_platform/quality/
    gx_suites.py): one row per scope (site × production day) that holds MES confirmations or
    SCADA readings, with each system's rows of the day — MES confirmations, SCADA minute samples
    (the hourly aggregates' sample counts) — the median of its previous 7 production days that
    have rows, and their ratio, which the suite expects between 0.5 and 2. No history gives no
    median and no ratio (the check passes). Scopes and days come from the two other batches
    (qa_mes_confirmation_required_fields, qa_scada_sensor_ranges): one placement for all. -#}
{%- set systems = ['mes', 'scada'] %}
{%- set history_days = 7 %}

with mes_confirmations as (
    select * from {{ ref('qa_mes_confirmation_required_fields') }}
),

scada_readings as (
    select * from {{ ref('qa_scada_sensor_ranges') }}
),

daily_rows as (
    select
        'mes' as source_system,
        site_code,
        production_day,
        count(*)::double precision as row_count
    from mes_confirmations
    where production_day is not null
    group by site_code, production_day
    union all
    select
        'scada' as source_system,
        site_code,
        production_day,
        sum(sample_count)::double precision as row_count
    from scada_readings
    where production_day is not null
    group by site_code, production_day
),

scopes as (
    select distinct
        site_code,
        production_day
    from daily_rows
),

systems as (
    select systems.source_system
    from (values ('mes'), ('scada')) as systems (source_system)
),

compared as (
    select
        scopes.site_code,
        scopes.production_day,
        systems.source_system,
        coalesce(today.row_count, 0) as row_count,
        (
            select percentile_cont(0.5) within group (order by past.row_count)
            from daily_rows as past
            where
                past.source_system = systems.source_system
                and past.site_code = scopes.site_code
                and past.production_day >= scopes.production_day - {{ history_days }}
                and past.production_day < scopes.production_day
        ) as median_row_count
    from scopes
    cross join systems
    left join daily_rows as today
        on
            today.source_system = systems.source_system
            and today.site_code = scopes.site_code
            and today.production_day = scopes.production_day
),

final as (
    select
        site_code,
        production_day,
        site_code || '|' || production_day::text as scope_key,
    {%- for system in systems %}
        max(case when source_system = '{{ system }}' then row_count end) as {{ system }}_row_count,
        max(case when source_system = '{{ system }}' then median_row_count end)
            as {{ system }}_median_row_count,
        max(case when source_system = '{{ system }}' then row_count / nullif(median_row_count, 0) end)
            as {{ system }}_row_count_ratio{{ ',' if not loop.last }}
    {%- endfor %}
    from compared
    group by site_code, production_day
)

select * from final
