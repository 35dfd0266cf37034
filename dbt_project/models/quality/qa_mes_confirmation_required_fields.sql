{#- The batch of the Great Expectations suite mes_confirmation_required_fields (factory_platform/
    quality/gx_suites.py): every MES confirmation (staging, latest version) with the fields the
    suite requires, in its scope. The site is the confirmation's own, else its machine's (the
    equipment hierarchy), else '(unknown)': a record never escapes the gate for lack of a site.
    The production day is that of the shift containing the confirmation's start (macro
    assign_shift), else the day the MES sent, else the local day the MES recorded it.
    confirmation_site_code is the site as the MES sent it (the suite requires it). -#}
with confirmations as (
    select * from {{ ref('stg_mes__confirmations') }}
),

equipment as (
    select * from {{ ref('dim_equipment') }}
),

sites as (
    select * from {{ ref('dim_site') }}
),

-- materialized: the placement and the final select must see the same placement_key per row
scoped_confirmations as materialized (
    select
        -- the placement's join key: confirmation_id itself may be missing (the suite checks it)
        row_number() over () as placement_key,
        confirmations.confirmation_id,
        confirmations.operation_id,
        confirmations.work_order_id,
        confirmations.site_code as confirmation_site_code,
        confirmations.line_code,
        confirmations.machine_code,
        confirmations.item_code,
        confirmations.source_production_date,
        confirmations.confirmation_start_at,
        confirmations.confirmation_end_at,
        confirmations.good_count,
        confirmations.scrap_count,
        confirmations.rework_count,
        confirmations.recorded_at,
        coalesce(confirmations.site_code, equipment.site_code, '(unknown)') as site_code,
        sites.site_timezone
    from confirmations
    left join equipment
        on
            equipment.machine_code = confirmations.machine_code
            and equipment.hierarchy_level = 'machine'
    left join sites on sites.site_code = coalesce(confirmations.site_code, equipment.site_code)
),

placed as (
    {{ assign_shift('scoped_confirmations', 'placement_key', 'confirmation_start_at') }}
),

final as (
    select
        scoped_confirmations.site_code,
        coalesce(
            placed.production_date,
            scoped_confirmations.source_production_date,
            (
                scoped_confirmations.recorded_at
                at time zone coalesce(scoped_confirmations.site_timezone, 'UTC')
            )::date
        ) as production_day,
        scoped_confirmations.confirmation_id,
        scoped_confirmations.operation_id,
        scoped_confirmations.work_order_id,
        scoped_confirmations.confirmation_site_code,
        scoped_confirmations.line_code,
        scoped_confirmations.machine_code,
        scoped_confirmations.item_code,
        scoped_confirmations.confirmation_start_at,
        scoped_confirmations.confirmation_end_at,
        scoped_confirmations.good_count,
        scoped_confirmations.scrap_count,
        scoped_confirmations.rework_count,
        scoped_confirmations.recorded_at
    from scoped_confirmations
    left join placed on placed.placement_key = scoped_confirmations.placement_key
)

select * from final
