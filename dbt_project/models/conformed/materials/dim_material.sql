{#- ISA-95 material definition, system of record ERP: one row per ERP material number, with
    the codes other systems use for it from the maintained cross-reference (MES item code, legacy
    WMS code, PLM item if the ERP keeps one; the PLM export itself carries the ERP number). -#}
with materials as (
    select * from {{ ref('stg_erp__materials') }}
),

xref as (
    select * from {{ ref('stg_erp__material_xref') }}
),

codes as (
    select
        material_number,
        string_agg(external_code, ',' order by external_code)
        filter (where source_system = 'MES') as mes_item_code,
        string_agg(external_code, ',' order by external_code)
        filter (where source_system = 'WMS_LEGACY') as wms_legacy_code,
        string_agg(external_code, ',' order by external_code)
        filter (where source_system = 'PLM') as plm_item_code,
        count(*) as external_code_count
    from xref
    group by material_number
),

final as (
    select
        materials.material_number,
        materials.material_type,
        materials.material_type = 'FERT' as is_finished_product,
        materials.material_name_en,
        materials.material_name_zh,
        materials.base_unit,
        codes.mes_item_code,
        codes.wms_legacy_code,
        coalesce(codes.plm_item_code, materials.material_number) as plm_item_code,
        coalesce(codes.external_code_count, 0) as external_code_count
    from materials
    left join codes on codes.material_number = materials.material_number
)

select * from final
