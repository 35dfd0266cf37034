{#- Every external code that resolves to an ERP material: MES item codes and legacy WMS codes
    from the cross-reference, and ERP numbers themselves (the WMS sends them too). One row per
    source system and code; conformed facts map through this model. -#}
{{ config(materialized='view') }}

with materials as (
    select * from {{ ref('stg_erp__materials') }}
),

xref as (
    select * from {{ ref('stg_erp__material_xref') }}
),

mapped as (
    select
        source_system,
        external_code,
        material_number
    from xref
    where material_number in (select materials.material_number from materials)
    union
    select
        'ERP' as source_system,
        material_number as external_code,
        material_number
    from materials
),

final as (
    select
        source_system,
        external_code,
        material_number,
        case when source_system = 'MES' then 'MES' else 'WMS' end as seen_in_system
    from mapped
)

select * from final
