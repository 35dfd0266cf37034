{#- Quality per line and local production date. From the MES confirmations: produced, first-pass
    good, scrap and rework pieces; FPY = good / produced (rework and scrap are not first pass),
    scrap ratio = scrap / produced, rework ratio = rework / produced (NULL when nothing was
    produced). From the QMS: defective pieces by defect code recorded against the line-day's
    confirmations, and inspection results out of specification.
    Incremental: the line-days with a confirmation, defect or inspection result recorded in the
    run's data interval are recomputed whole. -#}
{{
    config(
        materialized='incremental',
        unique_key=['line_code', 'production_date'],
        indexes=[{'columns': ['line_code', 'production_date']}],
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}
{%- set changed_line_days_sql %}
    select line_code, production_date
    from confirmations
    where
        {{ changed_in_interval('recorded_at') }}
        or {{ changed_in_interval('operation_recorded_at') }}
    union
    select line_code, production_date
    from defects
    where {{ changed_in_interval('recorded_at') }}
    union
    select line_code, production_date
    from inspection_results
    where {{ changed_in_interval('recorded_at') }}
{%- endset %}

with confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
),

defects as (
    select * from {{ ref('fct_quality_defect') }}
    where has_mes_confirmation
),

inspection_results as (
    select * from {{ ref('fct_inspection_result') }}
    where line_code is not null
),

{{ recompute_changed_keys(
    changed_line_days_sql, ['line_code', 'production_date'], {'confirmations_in_scope': 'confirmations'}
) }}

line_day_output as (
    select
        site_code,
        line_code,
        production_date,
        sum(produced_count) as produced_count,
        sum(good_count) as first_pass_good_count,
        sum(scrap_count) as scrap_count,
        sum(rework_count) as rework_count
    from confirmations_in_scope
    group by site_code, line_code, production_date
),

line_day_defects as (
    select
        line_code,
        production_date,
        sum(defect_count) as defect_count
    from defects
    group by line_code, production_date
),

line_day_inspections as (
    select
        line_code,
        production_date,
        count(*) as inspection_result_count,
        count(*) filter (where not is_in_spec) as out_of_spec_result_count
    from inspection_results
    group by line_code, production_date
),

final as (
    select
        line_day_output.site_code,
        line_day_output.line_code,
        line_day_output.production_date,
        line_day_output.produced_count::bigint as produced_count,
        line_day_output.first_pass_good_count::bigint as first_pass_good_count,
        line_day_output.scrap_count::bigint as scrap_count,
        line_day_output.rework_count::bigint as rework_count,
        {{ kpi_ratio('line_day_output.first_pass_good_count', 'line_day_output.produced_count') }} as fpy,
        {{ kpi_ratio('line_day_output.scrap_count', 'line_day_output.produced_count') }} as scrap_ratio,
        {{ kpi_ratio('line_day_output.rework_count', 'line_day_output.produced_count') }} as rework_ratio,
        coalesce(line_day_defects.defect_count, 0)::bigint as defect_count,
        coalesce(line_day_inspections.inspection_result_count, 0)::bigint as inspection_result_count,
        coalesce(line_day_inspections.out_of_spec_result_count, 0)::bigint as out_of_spec_result_count
    from line_day_output
    left join line_day_defects
        on
            line_day_defects.line_code = line_day_output.line_code
            and line_day_defects.production_date = line_day_output.production_date
    left join line_day_inspections
        on
            line_day_inspections.line_code = line_day_output.line_code
            and line_day_inspections.production_date = line_day_output.production_date
)

select * from final
