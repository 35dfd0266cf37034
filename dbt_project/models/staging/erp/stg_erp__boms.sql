with source as (
    select * from {{ source_or_empty('erp', 'boms') }}
),

latest as (
    select distinct on (parent_material, bom_revision, component_material) *
    from source
    order by parent_material asc, bom_revision asc, component_material asc, _extracted_at desc
),

renamed as (
    select
        parent_material as parent_material_number,
        bom_revision,
        component_material as component_material_number,
        case lower(unit) when 'g' then qty_per / 1000 else qty_per end::numeric as component_quantity_per_piece,
        case lower(unit) when 'g' then 'kg' when 'kg' then 'kg' else upper(unit) end as quantity_unit,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
