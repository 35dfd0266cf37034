{#- Every material code seen in the MES or the WMS that neither is an ERP number (WMS) nor is
    resolved by the cross-reference (MES: system MES; WMS: system WMS_LEGACY), one row per record
    that carries it, with where it was seen. Such records are excluded from the mapped facts
    (e.g. an orphan consumption is no genealogy edge) but reported here, never dropped. -#}
with codes as (
    select * from {{ ref('int_material_code_map') }}
),

mes_codes as (
    select external_code from codes
    where source_system = 'MES'
),

wms_codes as (
    select external_code from codes
    where source_system in ('ERP', 'WMS_LEGACY')
),

seen as (
    select
        'MES' as source_system,
        'work_orders' as source_entity,
        work_order_id as source_record_id,
        item_code as external_code,
        null::text as site_code,
        released_at as seen_at
    from {{ ref('stg_mes__work_orders') }}
    union all
    select
        'MES' as source_system,
        'operations' as source_entity,
        operation_id,
        item_code,
        site_code,
        actual_start_at
    from {{ ref('stg_mes__operations') }}
    union all
    select
        'MES' as source_system,
        'confirmations' as source_entity,
        confirmation_id,
        item_code,
        site_code,
        confirmation_start_at
    from {{ ref('stg_mes__confirmations') }}
    union all
    select
        'MES' as source_system,
        'material_consumptions' as source_entity,
        consumption_id,
        item_code,
        null as site_code,
        consumed_at
    from {{ ref('stg_mes__material_consumptions') }}
    union all
    select
        'MES' as source_system,
        'produced_lots' as source_entity,
        lot_id,
        item_code,
        null as site_code,
        produced_at
    from {{ ref('stg_mes__produced_lots') }}
    union all
    select
        'WMS' as source_system,
        'movements' as source_entity,
        movement_id,
        source_material_code,
        site_code,
        movement_at
    from {{ ref('stg_wms__movements') }}
    union all
    select
        'WMS' as source_system,
        'cycle_counts' as source_entity,
        count_id,
        source_material_code,
        site_code,
        counted_at
    from {{ ref('stg_wms__cycle_counts') }}
),

unmapped as (
    select seen.*
    from seen
    where
        (seen.source_system = 'MES' and seen.external_code not in (select mes_codes.external_code from mes_codes))
        or (seen.source_system = 'WMS' and seen.external_code not in (select wms_codes.external_code from wms_codes))
        or seen.external_code is null
),

final as (
    select
        source_system,
        source_entity,
        source_record_id,
        external_code,
        site_code,
        seen_at,
        'not in erp.material_xref' as unmapped_reason
    from unmapped
)

select * from final
