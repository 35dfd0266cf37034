{#- Confirmations placed on the site's local shift calendar: shifts start at 06:00, 14:00 and
    22:00 local time; the night shift belongs to the production date it starts on. -#}
with confirmations as (
    select * from {{ ref('stg_mes__confirmations') }}
),

sites as (
    select * from {{ ref('plant_sites') }}
),

localised as (
    select
        confirmations.*,
        sites.timezone as site_timezone,
        confirmations.confirmation_start_at at time zone sites.timezone as local_start
    from confirmations
    inner join sites on sites.site_code = confirmations.site_code
),

final as (
    select
        confirmation_id,
        operation_id,
        work_order_id,
        site_code,
        line_code,
        machine_code,
        item_code,
        (local_start - interval '6 hours')::date as production_date,
        case
            when local_start::time >= time '06:00' and local_start::time < time '14:00' then 'S1'
            when local_start::time >= time '14:00' and local_start::time < time '22:00' then 'S2'
            else 'S3'
        end as shift_code,
        confirmation_start_at,
        confirmation_end_at,
        good_count,
        scrap_count,
        rework_count,
        produced_count
    from localised
)

select * from final
