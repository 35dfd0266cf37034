{#- Machine state changes from the OPC UA server's history: one row per machine and source
    timestamp at which its `State` tag changed, with the `ReasonCode` and `OperationId` values of
    the same instant (the server writes the three together). A state, reason or operation
    value whose status was not Good never reached raw (quarantined by the load: the machine
    keeps its last good state). -#}
with source as (
    select * from {{ source_or_empty('opcua', 'tag_values') }}
    where tag in ('State', 'ReasonCode', 'OperationId')
),

pivoted as (
    select
        machine_code,
        source_at,
        min(site_code) as site_code,
        min(line_code) as line_code,
        min(value_text) filter (where tag = 'State') as machine_state,
        min(value_text) filter (where tag = 'ReasonCode') as reason_code,
        min(value_text) filter (where tag = 'OperationId') as operation_id
    from source
    group by machine_code, source_at
),

renamed as (
    select
        site_code,
        line_code,
        machine_code,
        machine_state as state,
        nullif(reason_code, '') as reason_code,
        nullif(operation_id, '') as operation_id,
        source_at as changed_at,
        'opcua'::text as signal_path
    from pivoted
    where machine_state is not null
)

select * from renamed
