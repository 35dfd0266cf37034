with source as (
    select * from {{ source_or_empty('mes', 'work_orders') }}
),

latest as (
    select distinct on (work_order_id) *
    from source
    order by work_order_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        work_order_id,
        erp_order_number,
        site_code,
        line_code,
        item_code,
        planned_qty::bigint as planned_count,
        due_date,
        status as work_order_status,
        released_at,
        actual_start_at,
        actual_end_at,
        updated_at as recorded_at
    from latest
)

select * from renamed
