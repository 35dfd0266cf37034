{#- Maintenance events per equipment: EAM failures (event_type 'failure', the MES unplanned
    downtime) and maintenance orders (event_type 'maintenance_order', CM corrective or PM
    preventive), each with start, end and duration in seconds, placed on the equipment
    hierarchy. One row per failure and per order. An order the EAM closed before its recorded
    start (a data-entry quirk of the source) gets duration 0 and is flagged. -#}
with failures as (
    select * from {{ ref('stg_eam__failures') }}
),

orders as (
    select * from {{ ref('stg_eam__maintenance_orders') }}
),

equipment as (
    select * from {{ ref('dim_equipment') }}
),

events as (
    select
        'FAIL|' || failure_id as maintenance_event_id,
        'failure' as event_type,
        failure_id as source_record_id,
        equipment_id,
        failure_id,
        failure_code,
        null::text as order_type,
        null::text as order_status,
        failure_text_en as description_en,
        failure_text_zh as description_zh,
        null::timestamptz as planned_start_at,
        failure_start_at as event_start_at,
        failure_end_at as event_end_at,
        duration_seconds,
        recorded_at
    from failures

    union all

    select
        'MO|' || maintenance_order_id as maintenance_event_id,
        'maintenance_order' as event_type,
        maintenance_order_id as source_record_id,
        equipment_id,
        failure_id,
        null::text as failure_code,
        order_type,
        order_status,
        description_en,
        description_zh,
        planned_start_at,
        actual_start_at as event_start_at,
        actual_end_at as event_end_at,
        duration_seconds,
        recorded_at
    from orders
),

final as (
    select
        events.maintenance_event_id,
        events.event_type,
        events.source_record_id,
        events.equipment_id,
        equipment.equipment_code,
        equipment.site_code,
        equipment.line_code,
        equipment.machine_code,
        events.failure_id,
        events.failure_code,
        events.order_type,
        events.order_status,
        events.description_en,
        events.description_zh,
        events.planned_start_at,
        events.event_start_at,
        events.event_end_at,
        greatest(events.duration_seconds, 0) as duration_seconds,
        coalesce(events.event_end_at < events.event_start_at, false) as is_end_before_start,
        events.event_start_at is not null and events.event_end_at is null as is_open,
        events.recorded_at
    from events
    left join equipment on equipment.equipment_id = events.equipment_id
)

select * from final
