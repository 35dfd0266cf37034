"""
### extract_crm — CRM contacts into `raw_crm.contacts`

Every 15 minutes (UTC data intervals) the contacts the CRM changed in the run's interval, plus
a 1-hour lookback, are read from the CRM's REST API (connection `crm_api`: numbered pages,
a bearer token) and COPY-loaded into `raw_crm.contacts`.

* **Idempotent:** a re-run or backfill of an interval replaces exactly that window's rows.
* **Nothing lost:** a contact without an e-mail address lands in `ops.quarantine` with its page
  and reason; every batch is counted in `ops.load_audit`.
* **Assets:** the raw table is an Airflow asset.

CRM: times in UTC; a contact is a change feed (one row per version; staging keeps the latest
`modified_at`).
"""

from datetime import timedelta

from factory_platform.fields import Field as F
from factory_platform.rest_spec import BearerAuth, PageNumberPaginator, RestApi
from factory_platform.sources import Entity, Source

SOURCE = Source(
    system="crm",
    title="CRM — customer contacts",
    interface="rest",
    conn_id="crm_api",
    schedule_cron="*/15 * * * *",
    lookback=timedelta(hours=1),
    page_size=100,
    max_reject_share=0.2,  # contacts without an e-mail address are common in a CRM
    # the window by `modified_from`/`modified_to`; pages numbered from 1 (`page`, `per_page`),
    # each answer says how many there are (`total_pages`); the token as `Bearer`
    rest=RestApi(
        window=("modified_from", "modified_to"),
        paginator=PageNumberPaginator(data_path="results", page_param="page", base_page=1,
                                      limit_param="per_page", total_pages_path="total_pages"),
        auth=BearerAuth(),
    ),
    entities=(
        Entity(
            name="contacts", endpoint="/crm/v2/contacts",
            natural_key=("contact_id",), cursor="modified_at",
            description="Customer contacts, one row per version.",
            fields=(
                F("contact_id", required=True, description="CRM contact id (natural key)."),
                F("account_name", description="The customer account."),
                F("email", required=True, description="E-mail address as entered."),
                F("country", description="ISO 3166 country code as entered."),
                F("lifecycle_stage", description="lead, prospect or customer."),
                F("annual_revenue_eur", "numeric", minimum=0,
                  description="The account's annual revenue (EUR)."),
                F("created_at", "timestamptz", description="Created (UTC)."),
                F("modified_at", "timestamptz", required=True,
                  description="Version time (UTC)."),
            ),
        ),
    ),
)
