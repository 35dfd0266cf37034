{#- ISA-95 sites: the EAM site-level equipment (system of record for names) with the site's
    time zone from the plant_sites configuration. A configured site the EAM does not list yet
    is kept with the configured names. -#}
with equipment as (
    select * from {{ ref('stg_eam__equipment') }}
),

plant_sites as (
    select * from {{ ref('plant_sites') }}
),

eam_sites as (
    select * from equipment
    where hierarchy_level = 'site'
),

enterprise as (
    select * from equipment
    where hierarchy_level = 'enterprise'
),

final as (
    select
        coalesce(eam_sites.equipment_code, plant_sites.site_code) as site_code,
        eam_sites.equipment_id,
        coalesce(eam_sites.name_en, plant_sites.site_name_en) as site_name_en,
        coalesce(eam_sites.name_zh, plant_sites.site_name_zh) as site_name_zh,
        plant_sites.timezone as site_timezone,
        enterprise.equipment_code as enterprise_code,
        enterprise.name_en as enterprise_name_en,
        enterprise.name_zh as enterprise_name_zh,
        eam_sites.equipment_id is not null as is_in_eam
    from eam_sites
    full outer join plant_sites on plant_sites.site_code = eam_sites.equipment_code
    left join enterprise on enterprise.equipment_id = eam_sites.parent_equipment_id
)

select * from final
