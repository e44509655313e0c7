"""The raw-data contract: one declared schema per table.

Every source (the simulator, CSV/Parquet folders, real-data adapters) delivers these tables;
`features.contract.validate` checks a folder against them. Only `customers` and `orders` are
required; every other table is optional and later stages use what is present.

Timestamps are instants: timezone-aware, stored in UTC. Money is in the shop's currency.
Identifiers are strings so that real sources keep their own keys.

Data arrive as a history (every table as known at the end of a day) and then as day batches.
A row comes into being at its table's `created` instant (an order at `order_ts`, a scan at
`event_ts`); a table without one comes with the row it references first (an order line with
its order) or, like the catalogue, belongs to the history. A few columns are filled after the
row exists (`updates`: a delivery, a refund, a payment, an acceptance). Day D's batch holds
the rows that came into being on D and every earlier row whose `updates` columns changed on
D, each re-sent whole as known at the end of D. An update is an upsert by the table's key:
the re-sent row replaces the earlier one, and only its `updates` columns may differ. Rows
rather than appended event rows or versions with an `updated_ts`, because every reader then
sees one row per key, exactly as in a history written at once, and the instant of each
update is already the filled column itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

Kind = Literal["string", "int", "float", "bool", "timestamp"]

CONTACT_REASONS = (
    "order_status",
    "delivery_delay",
    "missing_item",
    "damaged_item",
    "return_refund",
    "billing_dispute",
    "payment",
    "complaint",
    "renewal",
    "other",
)
CONTACT_CHANNELS = ("voice", "chat", "email")
HANDLERS = ("ai_agent", "human")
OUTREACH_CHANNELS = ("email", "sms", "voice")
# Proactive outreach: the four reactive actions, then the moments post-purchase playbooks
# name (after delivery, before a membership lapses, after a first order, after a resolved
# contact).
OUTREACH_ACTIONS = (
    "delay_notice",
    "service_recovery_call",
    "winback_offer",
    "payment_reminder",
    "satisfaction_check",
    "renewal_reminder",
    "onboarding_followup",
    "nps_survey",
)
# The table each action's subject_id names (none: the win-back offer is about the customer).
OUTREACH_SUBJECTS: dict[str, tuple[str, ...]] = {
    "delay_notice": ("shipments",),
    "service_recovery_call": ("contacts", "shipments"),
    "winback_offer": (),
    "payment_reminder": ("invoices",),
    "satisfaction_check": ("shipments", "orders"),
    "renewal_reminder": ("invoices",),
    "onboarding_followup": ("orders",),
    "nps_survey": ("contacts",),
}
OFFER_CHANNELS = ("web", "email", "sms", "voice")
OFFER_PLACEMENTS = ("tracking_page", "outreach")
# "none" is the control arm: the policy chose to show nothing, and acceptance then records
# whether the customer bought the category anyway.
OFFER_TYPES = ("discount", "recommendation", "none")
SERVICE_LEVELS = ("economy", "standard", "express")
TRACKING_EVENT_TYPES = ("dispatched", "in_transit", "exception", "out_for_delivery", "delivered")
RETURN_REASONS = (
    "damaged",
    "defective",
    "wrong_size",
    "not_as_described",
    "late_delivery",
    "changed_mind",
    "other",
)
PAYMENT_METHODS = ("card", "paypal", "invoice", "bank_transfer", "voucher", "other")
INVOICE_KINDS = ("order", "membership")

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class Column:
    """One column of a raw table.

    Attributes:
        name: Column name as it appears in files.
        kind: Logical type; see `arrow_type`.
        nullable: Whether missing values are allowed.
        allowed: Closed set of allowed values (strings only).
        min: Smallest allowed value (inclusive), for numbers.
        max: Largest allowed value (inclusive), for numbers.
        pattern: Regular expression every non-null string must match.
        timezone: The values must be IANA time-zone names.
        personal: The values describe a person beyond their pseudonymous key (where they
            live, how they speak and may be reached, what they told us). Keys may appear in
            logs and exports; personal values never do (`PERSONAL_COLUMNS`).
        optional: A source may leave the column out; it is then read as missing values.
        by_ingest: Ingest fills the column: it is part of the published raw data, and a
            source need not send it (a published folder sent again keeps its values). Where
            it is absent (a source's folder, data published before it existed) it reads as
            false (a flag) or missing (anything else).
        required_without: The value may be missing only where this other column of the row
            has one (a contact's reason, where its text can tell it).
        description: What the column means.
    """

    name: str
    kind: Kind
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    timezone: bool = False
    personal: bool = False
    optional: bool = False
    by_ingest: bool = False
    required_without: str | None = None
    description: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.kind]


@dataclass(frozen=True)
class Reference:
    """A foreign key, optionally with a time order between the two rows.

    Attributes:
        column: Column of this table holding the key.
        table: Referenced table.
        target: Key column of the referenced table.
        not_before: Optional pair (this table's timestamp, referenced table's timestamp):
            the first must not be earlier than the second.
    """

    column: str
    table: str
    target: str
    not_before: tuple[str, str] | None = None


@dataclass(frozen=True)
class SubjectReference:
    """A key whose table depends on another column's value (a polymorphic foreign key).

    Attributes:
        column: Column of this table holding the key.
        by: Column whose value decides the referenced table.
        tables: For each value of `by`, the tables the key may name (each by its first key
            column); an empty tuple means the key must be missing.
        owner: Column of this table that the subject must belong to (the subject's own
            `customer_id`, or its order's), or None for no such check.
    """

    column: str
    by: str
    tables: dict[str, tuple[str, ...]]
    owner: str | None = None


@dataclass(frozen=True)
class Ordering:
    """Within one row, `later` must not be earlier than `earlier` (nulls are skipped)."""

    later: str
    earlier: str


@dataclass(frozen=True)
class TableSchema:
    """The declared schema of one raw table.

    Attributes:
        created: The instant column at which a row comes into being, or None when the row
            comes with the row its first reference names (or, without references, with the
            history).
        updates: Columns filled after the row came into being, the first being the instant
            of that update (offers: `accepted_ts`, then the `revenue` known with it); an
            update re-sends the row with only these changed.
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    references: tuple[Reference, ...] = ()
    orderings: tuple[Ordering, ...] = ()
    subjects: tuple[SubjectReference, ...] = ()
    required: bool = False
    created: str | None = None
    updates: tuple[str, ...] = ()
    description: str = ""
    _by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    def column(self, name: str) -> Column:
        return self._by_name[name]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        """The published table: every column, those ingest fills included."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns]
        )

    @property
    def source_schema(self) -> pa.Schema:
        """What a source must send: every column but the optional ones and those ingest
        fills."""
        return pa.schema(
            [
                pa.field(c.name, c.arrow_type, nullable=c.nullable)
                for c in self.columns
                if not (c.optional or c.by_ingest)
            ]
        )


def _s(name: str, **kw) -> Column:
    return Column(name, "string", **kw)


def _ts(name: str, **kw) -> Column:
    return Column(name, "timestamp", **kw)


def _f(name: str, **kw) -> Column:
    return Column(name, "float", **kw)


def _i(name: str, **kw) -> Column:
    return Column(name, "int", **kw)


def _b(name: str, **kw) -> Column:
    return Column(name, "bool", **kw)


CUSTOMERS = TableSchema(
    name="customers",
    required=True,
    key=("customer_id",),
    description="One row per customer; consent flags gate every outreach channel.",
    created="signup_ts",
    columns=(
        _s("customer_id", description="Customer key."),
        _ts("signup_ts", description="When the account was created."),
        _s(
            "region",
            personal=True,
            description="Home region; the destination of the customer's parcels.",
        ),
        _s(
            "timezone",
            timezone=True,
            personal=True,
            description="IANA time zone, for quiet hours.",
        ),
        _s(
            "language",
            pattern=r"^[a-z]{2}$",
            personal=True,
            description="ISO 639-1 language code.",
        ),
        _s(
            "preferred_channel",
            allowed=OUTREACH_CHANNELS,
            personal=True,
            description="Preferred outreach.",
        ),
        _b("consent_email", personal=True, description="May be contacted by email."),
        _b("consent_sms", personal=True, description="May be contacted by SMS."),
        _b("consent_voice", personal=True, description="May be called."),
        _b("consent_marketing", personal=True, description="May receive offers."),
    ),
)

PRODUCTS = TableSchema(
    name="products",
    key=("product_id",),
    description="The catalogue.",
    columns=(
        _s("product_id", description="Product key."),
        _s("category", description="Merchandising category."),
        _f("price", min=0.0, description="List price."),
        _f("margin", min=-1.0, max=1.0, description="Gross margin as a fraction of price."),
        _f("weight_g", min=0.0, description="Shipping weight in grams."),
    ),
)

ORDERS = TableSchema(
    name="orders",
    required=True,
    key=("order_id",),
    description="One row per order.",
    created="order_ts",
    references=(
        Reference("customer_id", "customers", "customer_id", not_before=("order_ts", "signup_ts")),
    ),
    columns=(
        _s("order_id", description="Order key."),
        _s("customer_id", description="Who ordered."),
        _ts("order_ts", description="When the order was placed."),
        _f("amount", min=0.0, description="Order total."),
        _s("payment_method", allowed=PAYMENT_METHODS, description="How it is paid."),
    ),
)

ORDER_ITEMS = TableSchema(
    name="order_items",
    key=("order_id", "product_id"),
    description="Order lines, one per product in an order.",
    references=(
        Reference("order_id", "orders", "order_id"),
        Reference("product_id", "products", "product_id"),
    ),
    columns=(
        _s("order_id", description="The order."),
        _s("product_id", description="The product."),
        _i("qty", min=1, description="Units ordered."),
        _f("unit_price", min=0.0, description="Price paid per unit."),
    ),
)

SHIPMENTS = TableSchema(
    name="shipments",
    key=("shipment_id",),
    description="One parcel; delivered_ts is missing while undelivered (or lost).",
    created="shipped_ts",
    updates=("delivered_ts",),
    references=(
        Reference("order_id", "orders", "order_id", not_before=("shipped_ts", "order_ts")),
    ),
    orderings=(Ordering("delivered_ts", "shipped_ts"), Ordering("promised_ts", "shipped_ts")),
    columns=(
        _s("shipment_id", description="Shipment key."),
        _s("order_id", description="The order shipped."),
        _s("carrier", description="Carrier name."),
        _s("service_level", allowed=SERVICE_LEVELS, description="Booked service level."),
        _s("origin_region", description="Warehouse region."),
        _s("destination_region", personal=True, description="Delivery region."),
        _f("distance_km", min=0.0, description="Route distance."),
        _ts("shipped_ts", description="Handed to the carrier (dispatch)."),
        _ts("promised_ts", description="Delivery promised to the customer."),
        _ts("delivered_ts", nullable=True, description="Delivered; missing if not (yet)."),
    ),
)

TRACKING_EVENTS = TableSchema(
    name="tracking_events",
    key=("event_id",),
    description="Carrier scans of a shipment, exceptions included.",
    created="event_ts",
    references=(
        Reference("shipment_id", "shipments", "shipment_id", not_before=("event_ts", "shipped_ts")),
    ),
    columns=(
        _s("event_id", description="Event key."),
        _s("shipment_id", description="The shipment scanned."),
        _s("event_type", allowed=TRACKING_EVENT_TYPES, description="What the scan says."),
        _ts("event_ts", description="When it happened."),
    ),
)

RETURNS = TableSchema(
    name="returns",
    key=("return_id",),
    description="Return requests and their refunds.",
    created="requested_ts",
    updates=("refunded_ts",),
    references=(
        Reference("order_id", "orders", "order_id", not_before=("requested_ts", "order_ts")),
        Reference("product_id", "products", "product_id"),
    ),
    orderings=(Ordering("refunded_ts", "requested_ts"),),
    columns=(
        _s("return_id", description="Return key."),
        _s("order_id", description="The order returned from."),
        _s("product_id", description="The product returned."),
        _s("reason", allowed=RETURN_REASONS, description="Why it came back."),
        _ts("requested_ts", description="When the return was requested."),
        _ts("refunded_ts", nullable=True, description="When the refund was paid."),
        _f("amount", min=0.0, description="Refund amount."),
    ),
)

CONTACTS = TableSchema(
    name="contacts",
    key=("contact_id",),
    description=(
        "Contact-center interactions with their handling and survey scores; a contact that "
        "came as text may leave its reason to ingest, which infers and marks it."
    ),
    created="ts",
    references=(
        Reference("customer_id", "customers", "customer_id", not_before=("ts", "signup_ts")),
        Reference("order_id", "orders", "order_id", not_before=("ts", "order_ts")),
    ),
    columns=(
        _s("contact_id", description="Contact key."),
        _s("customer_id", description="Who contacted us."),
        _s("order_id", nullable=True, description="The order concerned, if any."),
        _ts("ts", description="When the contact started."),
        _s("channel", allowed=CONTACT_CHANNELS, description="Voice, chat or email."),
        _s(
            "language",
            pattern=r"^[a-z]{2}$",
            personal=True,
            description="Language of the contact.",
        ),
        _s(
            "reason",
            allowed=CONTACT_REASONS,
            nullable=True,
            required_without="text",
            description="Why the customer got in touch; may be missing where text is given, "
            "and ingest then infers it from the text.",
        ),
        _s(
            "text",
            nullable=True,
            optional=True,
            personal=True,
            description="The customer's message, where the contact came as text.",
        ),
        _b(
            "reason_inferred",
            by_ingest=True,
            description="The reason was inferred from the text by the contact-reason "
            "classifier; false where the source gave it.",
        ),
        _f(
            "reason_confidence",
            nullable=True,
            min=0.0,
            max=1.0,
            by_ingest=True,
            description="The classifier's probability of its most likely reason; missing "
            "where the reason was given. Below its threshold the reason is other.",
        ),
        _b(
            "reason_low_confidence",
            by_ingest=True,
            description="The classifier's confidence was below the threshold of the "
            "version that answered, so the reason is other; false where the reason was given.",
        ),
        _s("handled_by", allowed=HANDLERS, description="AI agent or human."),
        _f("wait_s", min=0.0, description="Seconds waiting before handling."),
        _f("handle_s", min=0.0, description="Seconds of handling."),
        _i("transfers", min=0, description="Times the contact was transferred."),
        _b("resolved_first_contact", description="Resolved without a repeat contact."),
        _i(
            "csat",
            nullable=True,
            min=1,
            max=5,
            personal=True,
            description="Satisfaction survey, 1-5.",
        ),
        _i(
            "ces",
            nullable=True,
            min=1,
            max=7,
            personal=True,
            description="Customer effort score, 1-7.",
        ),
        _i(
            "nps",
            nullable=True,
            min=0,
            max=10,
            personal=True,
            description="Likelihood to recommend, 0-10.",
        ),
    ),
)

INVOICES = TableSchema(
    name="invoices",
    key=("invoice_id",),
    description="Invoices to be paid (pay-later orders and membership renewals).",
    created="issued_ts",
    updates=("paid_ts",),
    references=(
        Reference("customer_id", "customers", "customer_id", not_before=("issued_ts", "signup_ts")),
        Reference("order_id", "orders", "order_id", not_before=("issued_ts", "order_ts")),
    ),
    orderings=(Ordering("due_date", "issued_ts"), Ordering("paid_ts", "issued_ts")),
    columns=(
        _s("invoice_id", description="Invoice key."),
        _s("customer_id", description="Who pays."),
        _s("order_id", nullable=True, description="The order billed; missing for memberships."),
        _s("kind", allowed=INVOICE_KINDS, description="What is billed."),
        _ts("issued_ts", description="When the invoice was issued."),
        _ts("due_date", description="When payment is due."),
        _f("amount", min=0.0, description="Amount due."),
        _ts("paid_ts", nullable=True, description="When it was paid; missing while unpaid."),
    ),
)

OFFERS = TableSchema(
    name="offers",
    key=("offer_id",),
    description="Every offer decision logged with the propensity of the logging policy.",
    created="ts",
    updates=("accepted_ts", "revenue"),
    references=(
        Reference("customer_id", "customers", "customer_id", not_before=("ts", "signup_ts")),
        Reference("order_id", "orders", "order_id", not_before=("ts", "order_ts")),
    ),
    orderings=(Ordering("accepted_ts", "ts"),),
    columns=(
        _s("offer_id", description="Offer key."),
        _s("customer_id", description="Who saw it."),
        _s("order_id", nullable=True, description="The tracked order (tracking page)."),
        _ts("ts", description="When it was shown or sent."),
        _s("placement", allowed=OFFER_PLACEMENTS, description="Tracking page or outreach."),
        _s("channel", allowed=OFFER_CHANNELS, description="Where it was delivered."),
        _s(
            "offer_type",
            allowed=OFFER_TYPES,
            description="Discount, plain recommendation, or none.",
        ),
        _s("category", nullable=True, description="Offered category; missing for none."),
        _f("discount", min=0.0, max=0.9, description="Discount as a fraction of list price."),
        _f("propensity", min=1e-9, max=1.0, description="Probability the policy chose this."),
        _ts("accepted_ts", nullable=True, description="When accepted (bought), within 7 days."),
        _f("revenue", nullable=True, min=0.0, description="Revenue of the accepted purchase."),
    ),
)

OUTREACH = TableSchema(
    name="outreach",
    key=("outreach_id",),
    created="ts",
    description=(
        "Proactive outreach decisions of the logging policy, held-out ones included: what "
        "was (or, for a holdout, would have been) sent, on which channel, about what."
    ),
    references=(
        Reference("customer_id", "customers", "customer_id", not_before=("ts", "signup_ts")),
    ),
    subjects=(SubjectReference("subject_id", "action", OUTREACH_SUBJECTS, owner="customer_id"),),
    columns=(
        _s("outreach_id", description="Outreach key."),
        _s("customer_id", description="Who it is for."),
        _ts("ts", description="When it was sent (or, held out, would have been)."),
        _s("action", allowed=OUTREACH_ACTIONS, description="What the policy chose."),
        _s("channel", allowed=OUTREACH_CHANNELS, description="Email, SMS or a call."),
        _s(
            "subject_id",
            nullable=True,
            description="The shipment, contact, invoice or order it is about (by action).",
        ),
        _f(
            "propensity",
            min=1e-9,
            max=1.0,
            description="Probability of this row's choice: the action and sent or held out.",
        ),
        _b("holdout", description="Chosen but held out at random: logged, not sent."),
    ),
)

CONTRACT: dict[str, TableSchema] = {
    t.name: t
    for t in (
        CUSTOMERS,
        PRODUCTS,
        ORDERS,
        ORDER_ITEMS,
        SHIPMENTS,
        TRACKING_EVENTS,
        RETURNS,
        CONTACTS,
        INVOICES,
        OFFERS,
        OUTREACH,
    )
}
"""All tables, in dependency order (a table only references tables before it)."""

PERSONAL_COLUMNS: frozenset[str] = frozenset(
    c.name for t in CONTRACT.values() for c in t.columns if c.personal
)
"""Names of the personal columns (`Column.personal`): features of the same name carry the
same values, so logs, messages and the outreach export show them by name only."""
