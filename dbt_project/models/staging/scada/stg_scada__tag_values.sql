{#- Historian samples per machine × tag × minute (UTC), with the tag's SI unit. A view: the
    samples are not copied (the volume source); conformed aggregates them per hour. Re-delivered
    samples of one machine × tag × ts are reduced to one (the latest extraction) in the aggregate. -#}
with source as (
    select * from {{ source_or_empty('scada', 'tag_values') }}
),

renamed as (
    select
        machine_code,
        tag as tag_name,
        ts as reading_at,
        value::double precision as reading_value,
        case
            when tag = 'temperature' then 'celsius'
            when tag = 'pressure' then 'bar'
            when tag = 'vibration' then 'mm_per_second'
            when tag = 'power' then 'kw'
            when tag = 'counter' then 'count'
        end as reading_unit,
        upper(quality) as reading_quality,
        _extracted_at as extracted_at,
        _file_id as file_id
    from source
)

select * from renamed
