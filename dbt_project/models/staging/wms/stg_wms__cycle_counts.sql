{#- WMS cycle counts, one row per count_id: book (before the count) and counted quantity per
    site, material and local count date; the counted time converted to UTC with the site's zone. -#}
with source as (
    select * from {{ source_or_empty('wms', 'cycle_counts') }}
),

sites as (
    select * from {{ ref('plant_sites') }}
),

latest as (
    select distinct on (count_id) *
    from source
    order by count_id asc, _extracted_at desc
),

renamed as (
    select
        latest.count_id,
        latest.site as site_code,
        latest.count_date,
        latest.counted_time at time zone sites.timezone as counted_at,
        latest.counted_time as counted_at_local,
        latest.material as source_material_code,
        latest.material_desc as material_description,
        case lower(latest.unit) when 'g' then 'kg' when 'kg' then 'kg' else upper(latest.unit) end as quantity_unit,
        case lower(latest.unit) when 'g' then latest.book_qty / 1000 else latest.book_qty end::numeric as book_quantity,
        case lower(latest.unit) when 'g' then latest.counted_qty / 1000 else latest.counted_qty end::numeric
            as counted_quantity,
        latest._source as source_file_name,
        latest._extracted_at as extracted_at
    from latest
    left join sites on sites.site_code = latest.site
)

select * from renamed
