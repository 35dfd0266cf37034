{#- EAM maintenance orders, latest version per order by version_at (planned → started →
    finished); duration in seconds once finished. -#}
with source as (
    select * from {{ source_or_empty('eam', 'maintenance_orders') }}
),

latest as (
    select distinct on (order_id) *
    from source
    order by order_id asc, version_at desc, _extracted_at desc
),

renamed as (
    select
        order_id as maintenance_order_id,
        equipment_id,
        upper(order_type) as order_type,
        failure_id,
        description_en,
        description_zh,
        planned_start_at,
        actual_start_at,
        actual_end_at,
        extract(epoch from actual_end_at - actual_start_at)::bigint as duration_seconds,
        lower(status) as order_status,
        version_at as recorded_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
