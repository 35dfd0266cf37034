{#- created_at arrives as the site's local wall time; the site's time zone turns it into UTC. -#}
with source as (
    select * from {{ source_or_empty('qms', 'inspection_lots') }}
),

sites as (
    select * from {{ ref('plant_sites') }}
),

latest as (
    select distinct on (inspection_lot_id) *
    from source
    order by inspection_lot_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        latest.inspection_lot_id,
        latest.lot_id,
        latest.material_number,
        latest.site_code,
        latest.machine_code,
        latest.lot_qty::bigint as lot_count,
        latest.sample_size::bigint as sample_size_count,
        latest.created_at as created_at_local,
        latest.created_at at time zone sites.timezone as created_at,
        latest.updated_at as recorded_at
    from latest
    left join sites on sites.site_code = latest.site_code
)

select * from renamed
