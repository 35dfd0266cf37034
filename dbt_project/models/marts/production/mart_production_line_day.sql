with confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
),

final as (
    select
        site_code,
        line_code,
        production_date,
        sum(good_count)::bigint as good_count,
        sum(scrap_count)::bigint as scrap_count,
        sum(rework_count)::bigint as rework_count,
        sum(produced_count)::bigint as produced_count,
        count(*)::bigint as confirmation_count
    from confirmations
    group by site_code, line_code, production_date
)

select * from final
