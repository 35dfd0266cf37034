{#- PLM items, latest export per item number and revision. -#}
with source as (
    select * from {{ source_or_empty('plm', 'items') }}
),

latest as (
    select distinct on (number, revision) *
    from source
    order by number asc, revision asc, exported_at desc, _extracted_at desc
),

renamed as (
    select
        number || '|' || revision as item_revision_id,
        number as material_number,
        revision as item_revision,
        mes_item as mes_item_code,
        item_type,
        uom as unit,
        name_en,
        name_zh,
        site as site_code,
        exported_at,
        export_type,
        _batch_id as batch_id
    from latest
)

select * from renamed
