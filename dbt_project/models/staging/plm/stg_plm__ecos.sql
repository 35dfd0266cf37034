{#- PLM engineering change orders, latest export per ECO. -#}
with source as (
    select * from {{ source_or_empty('plm', 'ecos') }}
),

latest as (
    select distinct on (eco_number) *
    from source
    order by eco_number asc, exported_at desc, _extracted_at desc
),

renamed as (
    select
        eco_number,
        lower(status) as eco_status,
        released_at,
        effective_from as effective_from_date,
        affected as affected_revisions,
        description_en,
        description_zh,
        site as site_code,
        exported_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
