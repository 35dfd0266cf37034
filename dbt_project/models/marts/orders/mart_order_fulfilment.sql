{#- On time, in full per sales order. The plant has no shipping system, so a sales order is
    fulfilled by the good pieces of its production orders: in full when they reach the ordered
    quantity, on time when the last confirmation of those orders ended (site-local date) on or
    before the requested date; OTIF when both. -#}
with sales_orders as (
    select * from {{ ref('stg_erp__sales_orders') }}
),

production as (
    select * from {{ ref('mart_production_vs_plan') }}
),

orders as (
    select * from {{ ref('dim_order') }}
),

per_sales_order as (
    select
        orders.sales_order_number,
        min(orders.site_code) as site_code,
        count(*) as production_order_count,
        sum(production.produced_good_count) as produced_good_count,
        max(production.completed_date) as completed_date,
        max(production.last_confirmation_at) as last_confirmation_at
    from orders
    inner join production on production.order_number = orders.order_number
    where orders.sales_order_number is not null
    group by orders.sales_order_number
),

measured as (
    select
        sales_orders.sales_order_number,
        sales_orders.customer_number,
        sales_orders.material_number,
        per_sales_order.site_code,
        sales_orders.order_quantity,
        coalesce(per_sales_order.produced_good_count, 0) as delivered_quantity,
        coalesce(per_sales_order.production_order_count, 0) as production_order_count,
        sales_orders.requested_date,
        per_sales_order.completed_date,
        per_sales_order.last_confirmation_at
    from sales_orders
    left join per_sales_order on per_sales_order.sales_order_number = sales_orders.sales_order_number
),

final as (
    select
        sales_order_number::text as sales_order_number,
        customer_number::text as customer_number,
        material_number::text as material_number,
        site_code::text as site_code,
        order_quantity::numeric as order_quantity,
        delivered_quantity::numeric as delivered_quantity,
        production_order_count::bigint as production_order_count,
        requested_date::date as requested_date,
        completed_date::date as completed_date,
        last_confirmation_at::timestamptz as last_confirmation_at,
        (delivered_quantity >= order_quantity)::boolean as is_in_full,
        coalesce(completed_date <= requested_date, false)::boolean as is_on_time,
        (delivered_quantity >= order_quantity and coalesce(completed_date <= requested_date, false))::boolean
            as is_on_time_in_full,
        ({{ kpi_ratio('delivered_quantity', 'order_quantity') }})::double precision as fill_rate_ratio,
        (completed_date - requested_date)::integer as delay_days
    from measured
)

select * from final
