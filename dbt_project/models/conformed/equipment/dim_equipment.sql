{#- ISA-95 equipment hierarchy (enterprise → site → area → line → machine), system of record
    EAM: every equipment with its parent, its ancestors' codes per level and its path of codes
    from the enterprise down (ENT/ERF/ERF-MACH/ERF-L1/ERF-L1-M01). Walked from the roots, so an
    equipment whose parent is missing from the register is not lost: it becomes a root. -#}
with recursive equipment as (
    select * from {{ ref('stg_eam__equipment') }}
),

roots as (
    select equipment.*
    from equipment
    left join equipment as parents on parents.equipment_id = equipment.parent_equipment_id
    where parents.equipment_id is null
),

tree as (
    select
        roots.equipment_id,
        roots.equipment_code,
        roots.parent_equipment_id,
        null::text as parent_equipment_code,
        0 as hierarchy_depth,
        roots.equipment_code::text as equipment_path,
        case when roots.hierarchy_level = 'site' then roots.equipment_code end as site_equipment_code,
        case when roots.hierarchy_level = 'area' then roots.equipment_code end as area_code,
        case when roots.hierarchy_level = 'line' then roots.equipment_code end as line_code,
        case when roots.hierarchy_level = 'machine' then roots.equipment_code end as machine_code
    from roots

    union all

    select
        children.equipment_id,
        children.equipment_code,
        children.parent_equipment_id,
        parent_tree.equipment_code as parent_equipment_code,
        parent_tree.hierarchy_depth + 1 as hierarchy_depth,
        parent_tree.equipment_path || '/' || children.equipment_code as equipment_path,
        coalesce(
            parent_tree.site_equipment_code,
            case when children.hierarchy_level = 'site' then children.equipment_code end
        ) as site_equipment_code,
        coalesce(
            parent_tree.area_code,
            case when children.hierarchy_level = 'area' then children.equipment_code end
        ) as area_code,
        coalesce(
            parent_tree.line_code,
            case when children.hierarchy_level = 'line' then children.equipment_code end
        ) as line_code,
        coalesce(
            parent_tree.machine_code,
            case when children.hierarchy_level = 'machine' then children.equipment_code end
        ) as machine_code
    from equipment as children
    inner join tree as parent_tree on parent_tree.equipment_id = children.parent_equipment_id
),

final as (
    select
        equipment.equipment_id,
        equipment.equipment_code,
        equipment.parent_equipment_id,
        tree.parent_equipment_code,
        equipment.hierarchy_level,
        tree.hierarchy_depth,
        tree.equipment_path,
        equipment.name_en,
        equipment.name_zh,
        coalesce(tree.site_equipment_code, nullif(equipment.site_code, '*')) as site_code,
        tree.area_code,
        tree.line_code,
        tree.machine_code,
        equipment.machine_type,
        equipment.manufacturer,
        equipment.commissioned_date,
        equipment.is_in_last_snapshot
    from equipment
    inner join tree on tree.equipment_id = equipment.equipment_id
)

select * from final
