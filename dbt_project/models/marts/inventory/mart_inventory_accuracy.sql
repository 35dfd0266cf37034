{#- Inventory record accuracy per site × material × local date: the WMS book before the cycle
    count vs the counted (physical) quantity, material mapped to the ERP number; accuracy
    = 1 − |physical − book| / book (NULL for an empty book). Turnover: the day's issues to
    production over the counted stock, and the ERP book after the count for reconciliation. -#}
with counts as (
    select * from {{ ref('stg_wms__cycle_counts') }}
),

codes as (
    select * from {{ ref('int_material_code_map') }}
    where source_system in ('ERP', 'WMS_LEGACY')
),

movements as (
    select * from {{ ref('fct_material_movement') }}
),

balances as (
    select * from {{ ref('stg_erp__inventory_balances') }}
),

daily_movements as (
    select
        site_code,
        material_number,
        movement_date,
        sum(movement_quantity) filter (where movement_type = 'RECEIPT') as received_quantity,
        sum(movement_quantity) filter (where movement_type = 'ISSUE') as issued_quantity
    from movements
    group by site_code, material_number, movement_date
),

counted as (
    select
        counts.site_code,
        codes.material_number,
        counts.count_date as balance_date,
        counts.quantity_unit,
        counts.book_quantity,
        counts.counted_quantity as physical_quantity,
        counts.counted_at
    from counts
    inner join codes on codes.external_code = counts.source_material_code
),

final as (
    select
        counted.site_code::text as site_code,
        counted.material_number::text as material_number,
        counted.balance_date::date as balance_date,
        counted.quantity_unit::text as quantity_unit,
        counted.book_quantity::numeric as book_quantity,
        counted.physical_quantity::numeric as physical_quantity,
        (counted.physical_quantity - counted.book_quantity)::numeric as diff_quantity,
        (counted.physical_quantity = counted.book_quantity)::boolean as is_accurate,
        (
            1 - {{ kpi_ratio('abs(counted.physical_quantity - counted.book_quantity)', 'counted.book_quantity') }}
        )::double precision
            as accuracy_ratio,
        coalesce(daily_movements.received_quantity, 0)::numeric as received_quantity,
        coalesce(daily_movements.issued_quantity, 0)::numeric as issued_quantity,
        ({{ kpi_ratio('coalesce(daily_movements.issued_quantity, 0)', 'counted.physical_quantity') }})::double precision
            as turnover_ratio,
        balances.book_quantity::numeric as erp_book_quantity,
        counted.counted_at::timestamptz as counted_at
    from counted
    left join daily_movements
        on daily_movements.site_code = counted.site_code
            and daily_movements.material_number = counted.material_number
            and daily_movements.movement_date = counted.balance_date
    left join balances
        on balances.site_code = counted.site_code
            and balances.material_number = counted.material_number
            and balances.balance_date = counted.balance_date
)

select * from final
