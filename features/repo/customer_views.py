"""Customer feature views."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Bool, Float64, Int64, String

from features.contract.schema import CONTACT_REASONS
from features.repo.entities import customer
from features.repo.sources import customer_snapshots_source

CONTACT_WINDOWS_DAYS = (30, 90, 365)

_profile = [
    Field(name="signup_epoch", dtype=Float64, description="Signup instant, epoch seconds."),
    Field(name="region", dtype=String, description="Home region."),
    Field(name="timezone", dtype=String, description="IANA time zone."),
    Field(name="language", dtype=String, description="Language (ISO 639-1)."),
    Field(name="preferred_channel", dtype=String, description="Preferred outreach channel."),
    Field(name="consent_email", dtype=Bool, description="May be emailed."),
    Field(name="consent_sms", dtype=Bool, description="May be texted."),
    Field(name="consent_voice", dtype=Bool, description="May be called."),
    Field(name="consent_marketing", dtype=Bool, description="May receive offers."),
]
_purchases = [
    Field(name="orders_total", dtype=Int64, description="Orders placed so far."),
    Field(name="orders_365d", dtype=Int64, description="Orders in the trailing 365 days."),
    Field(name="monetary_total", dtype=Float64, description="Spend so far."),
    Field(name="monetary_365d", dtype=Float64, description="Spend in the trailing 365 days."),
    Field(name="first_order_epoch", dtype=Float64, description="First order, epoch seconds."),
    Field(name="last_order_epoch", dtype=Float64, description="Latest order, epoch seconds."),
    Field(name="last_order_amount", dtype=Float64, description="Amount of the latest order."),
]
# The latest order's experience so far (events about it before the next order): the
# simulator's churn decision follows each order's experience, not a trailing window's.
_last_order = [
    Field(
        name="last_order_outcome_known",
        dtype=Int64,
        description="Parcels of the latest order whose lateness is known.",
    ),
    Field(name="last_order_late", dtype=Int64, description="Late parcels of the latest order."),
    Field(name="last_order_delivered", dtype=Int64, description="Delivered parcels, latest order."),
    Field(
        name="last_order_days_late",
        dtype=Float64,
        description="How late the latest order's delivered parcels came after their promise.",
    ),
    Field(name="last_order_contacts", dtype=Int64, description="Contacts on the latest order."),
    Field(
        name="last_order_unresolved",
        dtype=Int64,
        description="Contacts on the latest order not resolved at first contact.",
    ),
    Field(name="last_order_complaint", dtype=Int64, description="Complaints on the latest order."),
    Field(
        name="last_order_billing_dispute",
        dtype=Int64,
        description="Billing disputes on the latest order.",
    ),
    Field(
        name="last_order_damaged_item",
        dtype=Int64,
        description="Damaged-item contacts on the latest order.",
    ),
    Field(
        name="last_order_high_effort",
        dtype=Int64,
        description="Contacts on the latest order with an effort score of 5 or more.",
    ),
    Field(name="last_order_returns", dtype=Int64, description="Returns of the latest order."),
    Field(
        name="last_order_long_refund",
        dtype=Int64,
        description="Returns of the latest order refunded after 14 days or not by then.",
    ),
    Field(
        name="last_experience_epoch",
        dtype=Float64,
        description="Latest event of the latest order (order, parcel, contact, refund), epoch s.",
    ),
]
_deliveries = [
    Field(name="deliveries_total", dtype=Int64, description="Parcels whose outcome is known."),
    Field(name="late_deliveries_total", dtype=Int64, description="Parcels that came late."),
    Field(name="late_deliveries_90d", dtype=Int64, description="Late parcels, trailing 90 days."),
]
_contact_counts = [
    Field(
        name=f"contacts_{reason}_{days}d",
        dtype=Int64,
        description=f"Contacts with reason {reason.replace('_', ' ')} in the trailing {days} days.",
    )
    for reason in CONTACT_REASONS
    for days in CONTACT_WINDOWS_DAYS
]
# Beside the counts by reason: how many of them the contact-reason classifier read from
# the customer's text rather than the source giving them (`contacts.reason_inferred`).
_inferred_reason_counts = [
    Field(
        name=f"inferred_reason_contacts_{days}d",
        dtype=Int64,
        description=f"Contacts whose reason was inferred from their text, trailing {days} days.",
    )
    for days in CONTACT_WINDOWS_DAYS
]
_contacts = [
    Field(name="contacts_total", dtype=Int64, description="Contacts so far."),
    *_contact_counts,
    *_inferred_reason_counts,
    Field(name="last_contact_reason", dtype=String, description="Reason of the latest contact."),
    Field(name="last_contact_epoch", dtype=Float64, description="Latest contact, epoch seconds."),
    Field(
        name="unresolved_contacts_90d",
        dtype=Int64,
        description="Contacts not resolved at first contact, trailing 90 days.",
    ),
    Field(name="fcr_rate", dtype=Float64, description="Share resolved at first contact."),
    Field(name="wait_s_mean", dtype=Float64, description="Mean wait before handling, seconds."),
    Field(name="transfers_mean", dtype=Float64, description="Mean transfers per contact."),
    Field(name="ai_share", dtype=Float64, description="Share of contacts handled by AI."),
    Field(name="csat_mean", dtype=Float64, description="Mean CSAT of answered surveys (1-5)."),
    Field(name="ces_mean", dtype=Float64, description="Mean effort score answered (1-7)."),
    Field(name="nps_mean", dtype=Float64, description="Mean NPS answer (0-10)."),
]
_returns_offers_billing = [
    Field(name="returns_total", dtype=Int64, description="Return requests so far."),
    Field(name="open_returns", dtype=Int64, description="Requested returns not yet refunded."),
    Field(name="refund_lag_days_mean", dtype=Float64, description="Mean time to refund, days."),
    Field(name="offers_received_total", dtype=Int64, description="Offers shown or sent."),
    Field(
        name="offers_received_90d",
        dtype=Int64,
        description="Offers shown or sent, trailing 90 days.",
    ),
    Field(name="offers_accepted_total", dtype=Int64, description="Offers accepted so far."),
    Field(name="invoices_overdue_total", dtype=Int64, description="Invoices that went overdue."),
    Field(name="invoices_overdue_open", dtype=Int64, description="Overdue invoices still unpaid."),
]

# Everything known about a customer at the start of a day. No TTL: a quiet customer's
# latest snapshot stays true however old it is, and dropping it would hide the very
# customers churn is about.
customer_snapshots = FeatureView(
    name="customer_snapshots",
    entities=[customer],
    ttl=timedelta(0),
    schema=[
        *_profile,
        *_purchases,
        *_last_order,
        *_deliveries,
        *_contacts,
        *_returns_offers_billing,
    ],
    source=customer_snapshots_source,
    online=True,
    description="Customer snapshot at midnight, from data strictly before it.",
)
