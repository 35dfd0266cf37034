{#- measured_at stays local here (the result carries no site); fct_inspection_result converts
    it to UTC with the inspection lot's site.
    Incremental (the largest QMS feed: every sample of every lot): a run reads the raw versions
    recorded in its data interval (an index range on raw updated_at, however long the history),
    keeps the latest per result and merges it, unless the table already holds a newer version
    (a backfill over an old interval brings old versions back). A full refresh takes the latest
    of every raw version. -#}
{{
    config(
        materialized='incremental',
        unique_key='result_id',
        indexes=[{'columns': ['result_id'], 'unique': true}, {'columns': ['recorded_at']}],
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
    )
}}

with source as (
    select * from {{ source_or_empty('qms', 'inspection_results') }}
    {%- if is_incremental() %}
        where {{ changed_in_interval('updated_at') }}
    {%- endif %}
),

latest as (
    select distinct on (result_id) *
    from source
    order by result_id asc, updated_at desc, _extracted_at desc
),

renamed as (
    select
        result_id,
        inspection_lot_id,
        characteristic_id,
        sample_no::integer as sample_no,
        value::numeric as measured_value,
        unit as measurement_unit,
        in_spec as is_in_spec,
        measured_at as measured_at_local,
        updated_at as recorded_at,
        _extracted_at as extracted_at
    from latest
)

{% if is_incremental() %}
    select renamed.*
    from renamed
    left join {{ this }} as kept on kept.result_id = renamed.result_id
    where
        kept.result_id is null
        or (renamed.recorded_at, renamed.extracted_at) >= (kept.recorded_at, kept.extracted_at)
{% else %}
    select * from renamed
{% endif %}
