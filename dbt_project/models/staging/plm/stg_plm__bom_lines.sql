{#- PLM BOM lines, latest export per parent, BOM revision and component. -#}
with source as (
    select * from {{ source_or_empty('plm', 'bom_lines') }}
),

latest as (
    select distinct on (parent_number, bom_revision, component_number) *
    from source
    order by parent_number asc, bom_revision asc, component_number asc, exported_at desc, _extracted_at desc
),

renamed as (
    select
        parent_number || '|' || bom_revision || '|' || component_number as bom_line_id,
        parent_number as parent_material_number,
        bom_revision,
        component_number as component_material_number,
        effective_from as effective_from_date,
        qty as component_qty,
        uom as unit,
        site as site_code,
        exported_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
