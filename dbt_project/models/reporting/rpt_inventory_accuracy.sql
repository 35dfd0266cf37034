{#- Inventory record accuracy per site × ERP material × count date (WMS book before the count vs
    counted), gated on the scope (site × the count's local production date) like
    rpt_oee_line_day. -#}
with inventory_counts as (
    select * from {{ ref('mart_inventory_accuracy') }}
),

scope_status as (
    select * from {{ source('dq', 'scope_status') }}
),

final as (
    select
        inventory_counts.site_code,
        inventory_counts.material_number,
        inventory_counts.balance_date,
        inventory_counts.quantity_unit,
        inventory_counts.book_quantity,
        inventory_counts.physical_quantity,
        inventory_counts.diff_quantity,
        inventory_counts.accuracy_ratio,
        inventory_counts.is_accurate,
        (scope_status.decision = 'flagged') as dq_flagged,
        nullif(array_to_string(scope_status.failing_checks, ', '), '') as dq_failing_checks
    from inventory_counts
    inner join scope_status
        on
            scope_status.site_code = inventory_counts.site_code
            and scope_status.production_day = inventory_counts.balance_date
    where scope_status.decision in ('passed', 'flagged')
)

select * from final
