{#- The EAM equipment register, latest snapshot per equipment: every extraction run lands the
    whole register, so the newest extraction of an id is its current state.     An id missing from the newest snapshot (retired) is kept, flagged. -#}
with source as (
    select * from {{ source_or_empty('eam', 'equipment') }}
),

last_snapshot as (
    select max(_extracted_at) as extracted_at from source
),

latest as (
    select distinct on (equipment_id) *
    from source
    order by equipment_id asc, _extracted_at desc, _batch_id desc
),

renamed as (
    select
        latest.equipment_id,
        latest.equipment_code,
        latest.parent_equipment_id,
        lower(latest.hierarchy_level) as hierarchy_level,
        latest.name_en,
        latest.name_zh,
        latest.site_code,
        latest.machine_type,
        latest.manufacturer,
        latest.commissioned_on as commissioned_date,
        latest._extracted_at = last_snapshot.extracted_at as is_in_last_snapshot,
        latest._extracted_at as extracted_at,
        latest._batch_id as batch_id
    from latest
    cross join last_snapshot
)

select * from renamed
