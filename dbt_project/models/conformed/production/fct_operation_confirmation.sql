{#- ISA-95 operations performance: one row per MES confirmation (operation × shift segment),
    placed in the site's local shift (dim_shift, DST-correct) and valued with the operation's
    ideal cycle time (ISO 22400 PRI × PQ = pri_seconds).
    Incremental: confirmations recorded within the run's data interval (plus lookback), and
    those whose operation was, are merged by confirmation_id. Quarantined confirmations never
    reach raw, so none need filtering here. -#}
{{
    config(
        materialized='incremental',
        unique_key='confirmation_id',
        indexes=[{'columns': ['confirmation_id'], 'unique': true}, {'columns': ['recorded_at']}, {'columns': ['operation_recorded_at']}, {'columns': ['machine_code', 'production_date', 'shift_code']}],
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
    )
}}

with confirmations as (
    select * from {{ ref('stg_mes__confirmations') }}
),

operations as (
    select * from {{ ref('stg_mes__operations') }}
),

changed as (
    select confirmations.*
    from confirmations
    left join operations on operations.operation_id = confirmations.operation_id
    where
        {{ changed_in_interval('confirmations.recorded_at') }}
        or {{ changed_in_interval('operations.recorded_at') }}
),

placed as (
    {{ assign_shift('changed', 'confirmation_id', 'confirmation_start_at') }}
),

final as (
    select
        changed.confirmation_id,
        changed.operation_id,
        changed.work_order_id,
        placed.shift_id,
        changed.site_code,
        changed.line_code,
        changed.machine_code,
        changed.item_code,
        placed.production_date,
        placed.shift_code,
        changed.confirmation_start_at,
        changed.confirmation_end_at,
        changed.good_count,
        changed.scrap_count,
        changed.rework_count,
        changed.produced_count,
        operations.ideal_cycle_time_seconds,
        operations.ideal_cycle_time_seconds * changed.produced_count as pri_seconds,
        changed.confirmation_end_at <= placed.shift_end_at as is_within_shift,
        changed.recorded_at,
        operations.recorded_at as operation_recorded_at
    from changed
    left join placed on placed.confirmation_id = changed.confirmation_id
    left join operations on operations.operation_id = changed.operation_id
)

select * from final
