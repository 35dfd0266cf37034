with source as (
    select * from {{ source_or_empty('erp', 'inbound_postings') }}
),

latest as (
    select distinct on (posting_id) *
    from source
    order by posting_id asc, _extracted_at desc
),

renamed as (
    select
        posting_id::bigint as posting_id,
        idempotency_key,
        message_type,
        payload,
        status as posting_status,
        reason as rejection_reason,
        erp_document_number,
        reversal_of,
        received_at,
        _extracted_at as extracted_at
    from latest
)

select * from renamed
