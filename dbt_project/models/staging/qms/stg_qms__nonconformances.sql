with source as (
    select * from {{ source_or_empty('qms', 'nonconformances') }}
),

latest as (
    select distinct on (nc_id) *
    from source
    order by nc_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        nc_id as nonconformance_id,
        inspection_lot_id,
        lot_id,
        severity,
        description_en,
        description_zh,
        opened_at as opened_at_local,
        status as nonconformance_status,
        updated_at as recorded_at
    from latest
)

select * from renamed
