{#- Inspection results (QMS) with their characteristic's spec limits, the inspection lot, and
    the MES production they sampled (produced lot → confirmation → line, machine, shift).
    measured_at becomes UTC with the inspection lot's site.
    Incremental: results whose own record, inspection lot or producing confirmation was recorded
    in the run's data interval, merged by result_id. -#}
{{
    config(
        materialized='incremental',
        unique_key='result_id',
        indexes=[{'columns': ['result_id'], 'unique': true}, {'columns': ['recorded_at']}],
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
    )
}}

with results as (
    select * from {{ ref('stg_qms__inspection_results') }}
),

inspection_lots as (
    select * from {{ ref('stg_qms__inspection_lots') }}
),

characteristics as (
    select * from {{ ref('stg_qms__characteristics') }}
),

produced_lots as (
    select * from {{ ref('stg_mes__produced_lots') }}
),

confirmations as (
    select * from {{ ref('fct_operation_confirmation') }}
),

sites as (
    select * from {{ ref('plant_sites') }}
),

joined as (
    select
        results.*,
        inspection_lots.lot_id,
        inspection_lots.site_code,
        inspection_lots.machine_code as inspection_lot_machine_code,
        inspection_lots.material_number,
        inspection_lots.recorded_at as inspection_lot_recorded_at,
        produced_lots.confirmation_id,
        confirmations.recorded_at as confirmation_recorded_at
    from results
    left join inspection_lots on inspection_lots.inspection_lot_id = results.inspection_lot_id
    left join produced_lots on produced_lots.lot_id = inspection_lots.lot_id
    left join confirmations on confirmations.confirmation_id = produced_lots.confirmation_id
),

changed as (
    select *
    from joined
    where
        {{ changed_in_interval('recorded_at') }}
        or {{ changed_in_interval('inspection_lot_recorded_at') }}
        or {{ changed_in_interval('confirmation_recorded_at') }}
),

final as (
    select
        changed.result_id,
        changed.inspection_lot_id,
        changed.lot_id,
        changed.confirmation_id,
        confirmations.shift_id,
        changed.site_code,
        confirmations.line_code,
        coalesce(confirmations.machine_code, changed.inspection_lot_machine_code) as machine_code,
        confirmations.production_date,
        confirmations.shift_code,
        changed.material_number,
        changed.characteristic_id,
        characteristics.characteristic_code,
        characteristics.characteristic_name_en,
        characteristics.characteristic_name_zh,
        changed.sample_no,
        changed.measured_value,
        changed.measurement_unit,
        characteristics.target_value,
        characteristics.lower_spec_limit,
        characteristics.upper_spec_limit,
        changed.is_in_spec,
        changed.measured_at_local,
        changed.measured_at_local at time zone sites.timezone as measured_at,
        changed.recorded_at,
        changed.inspection_lot_recorded_at,
        changed.confirmation_recorded_at
    from changed
    left join characteristics on characteristics.characteristic_id = changed.characteristic_id
    left join confirmations on confirmations.confirmation_id = changed.confirmation_id
    left join sites on sites.site_code = changed.site_code
)

select * from final
