with source as (
    select * from {{ source_or_empty('mes', 'confirmations') }}
),

latest as (
    select distinct on (confirmation_id) *
    from source
    order by confirmation_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        confirmation_id,
        operation_id,
        work_order_id,
        site_code,
        line_code,
        machine_code,
        item_code,
        production_date as source_production_date,
        shift_code as source_shift_code,
        start_at as confirmation_start_at,
        end_at as confirmation_end_at,
        good_qty::bigint as good_count,
        scrap_qty::bigint as scrap_count,
        rework_qty::bigint as rework_count,
        (good_qty + scrap_qty + rework_qty)::bigint as produced_count,
        updated_at as recorded_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
