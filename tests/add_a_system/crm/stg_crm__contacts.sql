with source as (
    select * from {{ source_or_empty('crm', 'contacts') }}
),

latest as (
    select distinct on (contact_id) *
    from source
    order by contact_id, modified_at desc, _extracted_at desc
),

renamed as (
    select
        contact_id,
        account_name,
        lower(trim(email)) as email,
        upper(country) as country_code,
        lifecycle_stage,
        annual_revenue_eur,
        created_at,
        modified_at as updated_at
    from latest
)

select * from renamed
