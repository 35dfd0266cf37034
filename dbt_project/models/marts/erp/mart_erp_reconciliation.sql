{#- Per ERP production order: what MES produced, what the platform published (its outbox,
    effective postings), and what the ERP acknowledged (its own inbound table, read back), with
    the differences. Effective = accepted and not reversed by an accepted reversal. A blocked
    scope shows as MES > published until the gate lets it through. What is still on its way is
    counted too: pending messages (not answered yet, or rejected transiently and waiting to be
    sent again), permanent rejections, and held keys (ops.erp_hold): rejected by the ERP or
    vanished in bulk (a human releases them), or posted in a scope blocked since. -#}
with mes as (
    select
        order_number,
        count(*) as mes_confirmations,
        sum(good_qty) as mes_good_qty,
        sum(scrap_qty) as mes_scrap_qty,
        sum(rework_qty) as mes_rework_qty
    from {{ ref('pub_erp__production_confirmation') }}
    where order_number is not null
    group by order_number
),

outbox as (
    select * from {{ source('ops', 'erp_outbox') }}
    where message_type = 'production_confirmation'
),

published as (
    select
        postings.order_number,
        count(*) as published_confirmations,
        sum((postings.payload ->> 'yield_qty')::numeric) as published_good_qty,
        sum((postings.payload ->> 'scrap_qty')::numeric) as published_scrap_qty,
        sum((postings.payload ->> 'rework_qty')::numeric) as published_rework_qty,
        count(*) filter (where postings.dq_flagged) as flagged_confirmations
    from outbox as postings
    where postings.kind = 'posting' and postings.state = 'accepted'
        and not exists (
            select 1 from outbox as reversals
            where reversals.kind = 'reversal' and reversals.state = 'accepted'
                and reversals.reverses_key = postings.idempotency_key
        )
    group by postings.order_number
),

inbound as (
    select * from {{ ref('stg_erp__inbound_postings') }}
    where message_type = 'production_confirmation' and posting_status = 'accepted'
),

acknowledged as (
    select
        postings.payload ->> 'order_number' as order_number,
        count(*) as erp_confirmations,
        sum((postings.payload ->> 'yield_qty')::numeric) as erp_good_qty,
        sum((postings.payload ->> 'scrap_qty')::numeric) as erp_scrap_qty,
        sum((postings.payload ->> 'rework_qty')::numeric) as erp_rework_qty
    from inbound as postings
    where postings.reversal_of is null
        and not exists (
            select 1 from inbound as reversals
            where reversals.reversal_of = postings.idempotency_key
        )
    group by postings.payload ->> 'order_number'
),

in_flight as (
    select
        order_number,
        count(*) filter (where state = 'pending') as pending_confirmations,
        count(*) filter (where state = 'pending' and rejection_class = 'transient')
            as retrying_confirmations,
        count(*) filter (where state = 'rejected') as rejected_confirmations
    from outbox
    where order_number is not null
    group by order_number
),

holds as (
    select
        order_number,
        count(*) filter (where kind in ('erp_rejected', 'vanished_bulk')) as held_confirmations,
        count(*) filter (where kind = 'scope_blocked') as frozen_confirmations
    from {{ source('ops', 'erp_hold') }}
    where message_type = 'production_confirmation' and released_at is null
        and order_number is not null
    group by order_number
),

orders as (
    select order_number from mes
    union
    select order_number from published
    union
    select order_number from acknowledged
    union
    select order_number from in_flight
    union
    select order_number from holds
),

final as (
    select
        orders.order_number,
        coalesce(mes.mes_confirmations, 0) as mes_confirmations,
        coalesce(mes.mes_good_qty, 0) as mes_good_qty,
        coalesce(mes.mes_scrap_qty, 0) as mes_scrap_qty,
        coalesce(mes.mes_rework_qty, 0) as mes_rework_qty,
        coalesce(published.published_confirmations, 0) as published_confirmations,
        coalesce(published.published_good_qty, 0) as published_good_qty,
        coalesce(published.published_scrap_qty, 0) as published_scrap_qty,
        coalesce(published.published_rework_qty, 0) as published_rework_qty,
        coalesce(published.flagged_confirmations, 0) as flagged_confirmations,
        coalesce(acknowledged.erp_confirmations, 0) as erp_confirmations,
        coalesce(acknowledged.erp_good_qty, 0) as erp_good_qty,
        coalesce(acknowledged.erp_scrap_qty, 0) as erp_scrap_qty,
        coalesce(acknowledged.erp_rework_qty, 0) as erp_rework_qty,
        coalesce(in_flight.pending_confirmations, 0) as pending_confirmations,
        coalesce(in_flight.retrying_confirmations, 0) as retrying_confirmations,
        coalesce(in_flight.rejected_confirmations, 0) as rejected_confirmations,
        coalesce(holds.held_confirmations, 0) as held_confirmations,
        coalesce(holds.frozen_confirmations, 0) as frozen_confirmations
    from orders
    left join mes on mes.order_number = orders.order_number
    left join published on published.order_number = orders.order_number
    left join acknowledged on acknowledged.order_number = orders.order_number
    left join in_flight on in_flight.order_number = orders.order_number
    left join holds on holds.order_number = orders.order_number
)

select
    final.*,
    final.mes_good_qty - final.published_good_qty as mes_vs_published_good_diff,
    final.mes_scrap_qty - final.published_scrap_qty as mes_vs_published_scrap_diff,
    final.mes_rework_qty - final.published_rework_qty as mes_vs_published_rework_diff,
    final.published_good_qty - final.erp_good_qty as published_vs_erp_good_diff,
    final.published_scrap_qty - final.erp_scrap_qty as published_vs_erp_scrap_diff,
    final.published_rework_qty - final.erp_rework_qty as published_vs_erp_rework_diff,
    (
        final.mes_good_qty = final.published_good_qty and final.published_good_qty = final.erp_good_qty
        and final.mes_scrap_qty = final.published_scrap_qty and final.published_scrap_qty = final.erp_scrap_qty
        and final.mes_rework_qty = final.published_rework_qty
        and final.published_rework_qty = final.erp_rework_qty
        and final.pending_confirmations = 0 and final.held_confirmations = 0 and final.frozen_confirmations = 0
    ) as is_reconciled
from final
