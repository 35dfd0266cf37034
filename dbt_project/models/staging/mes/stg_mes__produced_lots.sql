with source as (
    select * from {{ source_or_empty('mes', 'produced_lots') }}
),

latest as (
    select distinct on (lot_id) *
    from source
    order by lot_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        lot_id,
        work_order_id,
        operation_id,
        confirmation_id,
        machine_code,
        item_code,
        qty::bigint as produced_count,
        produced_at,
        updated_at as recorded_at
    from latest
)

select * from renamed
