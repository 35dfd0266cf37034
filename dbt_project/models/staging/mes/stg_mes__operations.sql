with source as (
    select * from {{ source_or_empty('mes', 'operations') }}
),

latest as (
    select distinct on (operation_id) *
    from source
    order by operation_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        operation_id,
        work_order_id,
        operation_seq::integer as operation_seq,
        site_code,
        line_code,
        machine_code,
        item_code,
        planned_qty::bigint as planned_count,
        ideal_cycle_time_seconds::numeric as ideal_cycle_time_seconds,
        status as operation_status,
        actual_start_at,
        actual_end_at,
        updated_at as recorded_at
    from latest
)

select * from renamed
