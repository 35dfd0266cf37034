{#- ISA-95 production request: one row per ERP production order (system of record ERP), with
    the MES work order released from it and the sales order and customer it serves. -#}
with production_orders as (
    select * from {{ ref('stg_erp__production_orders') }}
),

work_orders as (
    select * from {{ ref('stg_mes__work_orders') }}
),

sales_orders as (
    select * from {{ ref('stg_erp__sales_orders') }}
),

customers as (
    select * from {{ ref('stg_erp__customers') }}
),

order_work_orders as (
    select
        erp_order_number,
        min(work_order_id) as work_order_id,
        count(*) as work_order_count,
        min(actual_start_at) as actual_start_at,
        max(actual_end_at) as actual_end_at
    from work_orders
    group by erp_order_number
),

final as (
    select
        production_orders.order_number,
        production_orders.site_code,
        production_orders.line_code,
        production_orders.material_number,
        production_orders.planned_count,
        production_orders.due_date,
        production_orders.released_at,
        order_work_orders.work_order_id,
        coalesce(order_work_orders.work_order_count, 0) as work_order_count,
        order_work_orders.actual_start_at,
        order_work_orders.actual_end_at,
        production_orders.sales_order_number,
        sales_orders.customer_number,
        customers.customer_name_en,
        customers.customer_name_zh,
        sales_orders.order_quantity as sales_order_quantity,
        sales_orders.requested_date
    from production_orders
    left join order_work_orders on order_work_orders.erp_order_number = production_orders.order_number
    left join sales_orders on sales_orders.sales_order_number = production_orders.sales_order_number
    left join customers on customers.customer_number = sales_orders.customer_number
)

select * from final
