with source as (
    select * from {{ source_or_empty('qms', 'usage_decisions') }}
),

latest as (
    select distinct on (usage_decision_id) *
    from source
    order by usage_decision_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        usage_decision_id,
        inspection_lot_id,
        lot_id,
        decision as usage_decision,
        decided_at as decided_at_local,
        updated_at as recorded_at
    from latest
)

select * from renamed
