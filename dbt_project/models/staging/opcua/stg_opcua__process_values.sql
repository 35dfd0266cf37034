{#- Analog process values from the OPC UA server's history (Temperature in °C, Speed in pieces
    per hour), one row per machine, tag and source timestamp, with their status. The rule for
    bad quality: a value whose status is not Good (e.g. BadSensorFailure) is kept and flagged,
    and its value is not used (`sample_value` is null; `delivered_value` keeps what the server sent). -#}
with source as (
    select * from {{ source_or_empty('opcua', 'tag_values') }}
    where tag in ('Temperature', 'Speed')
),

renamed as (
    select
        site_code,
        line_code,
        machine_code,
        lower(tag) as tag_name,
        case tag
            when 'Temperature' then 'celsius'
            when 'Speed' then 'pieces_per_hour'
        end as value_unit,
        source_at as sampled_at,
        -- Good: the status code's two severity bits are 00 (below 0x40000000)
        status_code < 1073741824 as is_good_quality,
        case when status_code < 1073741824 then value_numeric::double precision end as sample_value,
        value_numeric::double precision as delivered_value,
        status,
        status_code,
        'opcua'::text as signal_path
    from source
)

select * from renamed
