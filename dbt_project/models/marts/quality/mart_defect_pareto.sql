{#- Defect Pareto per site: defective pieces by defect code over the whole history, largest
    first, with each code's share and the cumulative share (the "vital few"), in English and
    Chinese. Counts only defects placed on an MES confirmation, so a site's total equals its
    scrap. Small (codes × sites): rebuilt as a table on every run. -#}
with defects as (
    select * from {{ ref('fct_quality_defect') }}
    where has_mes_confirmation
),

by_code as (
    select
        site_code,
        defect_code,
        (array_agg(defect_text_en order by recorded_at desc, defect_record_id desc))[1] as defect_text_en,
        (array_agg(defect_text_zh order by recorded_at desc, defect_record_id desc))[1] as defect_text_zh,
        sum(defect_count) as defect_count,
        count(distinct confirmation_id) as confirmation_count
    from defects
    group by site_code, defect_code
),

ranked as (
    select
        by_code.*,
        row_number() over (
            partition by by_code.site_code order by by_code.defect_count desc, by_code.defect_code asc
        ) as pareto_rank,
        sum(by_code.defect_count) over (
            partition by by_code.site_code order by by_code.defect_count desc, by_code.defect_code asc
            rows between unbounded preceding and current row
        ) as cumulative_defect_count,
        sum(by_code.defect_count) over (partition by by_code.site_code) as site_defect_count
    from by_code
),

final as (
    select
        site_code,
        defect_code,
        defect_text_en,
        defect_text_zh,
        pareto_rank::integer as pareto_rank,
        defect_count::bigint as defect_count,
        confirmation_count::bigint as confirmation_count,
        {{ kpi_ratio('defect_count', 'site_defect_count') }} as defect_share,
        {{ kpi_ratio('cumulative_defect_count', 'site_defect_count') }} as cumulative_defect_share
    from ranked
)

select * from final
