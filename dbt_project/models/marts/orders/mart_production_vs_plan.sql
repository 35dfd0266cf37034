{#- Plan attainment per ERP production order: planned pieces (ERP) vs the pieces the MES
    confirmed for the order's work orders (good, scrap, rework; quarantined confirmations never
    reach raw), and when the last confirmation ended relative to the due date. -#}
with orders as (
    select * from {{ ref('dim_order') }}
),

work_orders as (
    select * from {{ ref('stg_mes__work_orders') }}
),

confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
),

sites as (
    select * from {{ ref('plant_sites') }}
),

produced as (
    select
        work_orders.erp_order_number as order_number,
        sum(confirmations.good_count) as produced_good_count,
        sum(confirmations.scrap_count) as produced_scrap_count,
        sum(confirmations.rework_count) as produced_rework_count,
        count(*) as confirmation_count,
        min(confirmations.confirmation_start_at) as first_confirmation_at,
        max(confirmations.confirmation_end_at) as last_confirmation_at
    from confirmations
    inner join work_orders on work_orders.work_order_id = confirmations.work_order_id
    group by work_orders.erp_order_number
),

final as (
    select
        orders.order_number::text as order_number,
        orders.site_code::text as site_code,
        orders.line_code::text as line_code,
        orders.material_number::text as material_number,
        orders.work_order_id::text as work_order_id,
        orders.planned_count::bigint as planned_count,
        coalesce(produced.produced_good_count, 0)::bigint as produced_good_count,
        coalesce(produced.produced_scrap_count, 0)::bigint as produced_scrap_count,
        coalesce(produced.produced_rework_count, 0)::bigint as produced_rework_count,
        coalesce(produced.confirmation_count, 0)::bigint as confirmation_count,
        ({{ kpi_ratio('produced.produced_good_count', 'orders.planned_count') }})::double precision
            as plan_attainment_ratio,
        (coalesce(produced.produced_good_count, 0) - orders.planned_count)::bigint as deviation_count,
        orders.due_date::date as due_date,
        produced.first_confirmation_at::timestamptz as first_confirmation_at,
        produced.last_confirmation_at::timestamptz as last_confirmation_at,
        ((produced.last_confirmation_at - interval '1 microsecond') at time zone sites.timezone)::date
            as completed_date
    from orders
    left join produced on produced.order_number = orders.order_number
    left join sites on sites.site_code = orders.site_code
)

select * from final
