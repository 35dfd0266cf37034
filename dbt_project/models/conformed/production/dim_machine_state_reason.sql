with reasons as (
    select * from {{ ref('machine_state_reasons') }}
),

final as (
    select
        reason_code,
        machine_state,
        reason_text_en,
        reason_text_zh,
        iso22400_time_category,
        is_planned
    from reasons
)

select * from final
