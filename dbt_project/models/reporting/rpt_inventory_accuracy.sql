{#- Inventory record accuracy per site × ERP material × count date (WMS book before the count vs
    counted), gated on the scope (site × the count's local production date) like
    rpt_oee_line_day. -#}
with inventory_counts as (
    select * from {{ ref('mart_inventory_accuracy') }}
),

scope_status as (
    select * from {{ ref('scope_status') }}
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
        {{ gated_scope_flags() }}
    from inventory_counts
    {{ gated_scope_join('inventory_counts', 'balance_date') }}
)

select * from final
