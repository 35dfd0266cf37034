{#- Defective pieces by defect code (QMS), placed on the MES confirmation they were scrapped in
    (line, machine, shift) — the cross-system link is the confirmation id. The QMS's local
    recording time becomes UTC with the confirmation's site. Defects whose confirmation is not
    in the MES facts (the MES record was quarantined) stay, with has_mes_confirmation false.
    Incremental: defects, or their confirmations, recorded in the run's data interval. -#}
{{
    config(
        materialized='incremental',
        unique_key='defect_record_id',
        indexes=[{'columns': ['defect_record_id'], 'unique': true}, {'columns': ['recorded_at']}],
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
    )
}}

with defects as (
    select * from {{ ref('stg_qms__defects') }}
),

confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
),

sites as (
    select * from {{ ref('plant_sites') }}
),

changed as (
    select
        defects.*,
        confirmations.recorded_at as confirmation_recorded_at
    from defects
    left join confirmations on confirmations.confirmation_id = defects.confirmation_id
    where
        {{ changed_in_interval('defects.recorded_at') }}
        or {{ changed_in_interval('confirmations.recorded_at') }}
),

final as (
    select
        changed.defect_record_id,
        changed.confirmation_id,
        confirmations.shift_id,
        confirmations.site_code,
        confirmations.line_code,
        coalesce(confirmations.machine_code, changed.machine_code) as machine_code,
        confirmations.production_date,
        confirmations.shift_code,
        changed.material_number,
        confirmations.item_code,
        changed.defect_code,
        changed.defect_text_en,
        changed.defect_text_zh,
        changed.defect_count,
        changed.defect_recorded_at_local,
        changed.defect_recorded_at_local at time zone sites.timezone as defect_recorded_at,
        confirmations.confirmation_id is not null as has_mes_confirmation,
        changed.recorded_at,
        changed.confirmation_recorded_at
    from changed
    left join confirmations on confirmations.confirmation_id = changed.confirmation_id
    left join sites on sites.site_code = confirmations.site_code
)

select * from final
