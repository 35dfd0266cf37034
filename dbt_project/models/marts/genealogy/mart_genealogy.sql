{#- Lot traceability. backward: from every produced (finished) lot, every lot consumed into it
    at any depth, with the machine that consumed it; forward: from every consumed (raw) lot,
    every lot produced from it at any depth, with the ERP order, sales order and customer the
    produced lot served. One row per direction × root lot × genealogy edge. -#}
with recursive links as (
    select * from {{ ref('fct_material_lot_link') }}
),

work_orders as (
    select * from {{ ref('stg_mes__work_orders') }}
),

orders as (
    select * from {{ ref('dim_order') }}
),

backward as (
    select
        links.produced_lot_id as root_lot_id,
        1 as depth,
        links.consumption_id,
        links.consumed_lot_id as next_lot_id
    from links
    union all
    select
        backward.root_lot_id,
        backward.depth + 1 as depth,
        links.consumption_id,
        links.consumed_lot_id
    from backward
    inner join links on links.produced_lot_id = backward.next_lot_id
    where backward.depth < 20
),

forward as (
    select
        links.consumed_lot_id as root_lot_id,
        1 as depth,
        links.consumption_id,
        links.produced_lot_id as next_lot_id
    from links
    union all
    select
        forward.root_lot_id,
        forward.depth + 1 as depth,
        links.consumption_id,
        links.produced_lot_id
    from forward
    inner join links on links.consumed_lot_id = forward.next_lot_id
    where forward.depth < 20
),

traces as (
    select
        'backward' as direction,
        root_lot_id,
        depth,
        consumption_id
    from backward
    union all
    select
        'forward' as direction,
        root_lot_id,
        depth,
        consumption_id
    from forward
),

final as (
    select
        traces.direction::text as direction,
        traces.root_lot_id::text as root_lot_id,
        traces.depth::integer as trace_depth,
        links.consumption_id::text as consumption_id,
        links.consumed_lot_id::text as consumed_lot_id,
        links.produced_lot_id::text as produced_lot_id,
        links.consumed_material_number::text as consumed_material_number,
        links.produced_material_number::text as produced_material_number,
        links.consumed_quantity::numeric as consumed_quantity,
        links.quantity_unit::text as quantity_unit,
        links.machine_code::text as machine_code,
        links.work_order_id::text as work_order_id,
        work_orders.erp_order_number::text as order_number,
        orders.sales_order_number::text as sales_order_number,
        orders.customer_number::text as customer_number,
        links.consumed_at::timestamptz as consumed_at,
        links.produced_at::timestamptz as produced_at
    from traces
    inner join links on links.consumption_id = traces.consumption_id
    left join work_orders on work_orders.work_order_id = links.work_order_id
    left join orders on orders.order_number = work_orders.erp_order_number
)

select * from final
