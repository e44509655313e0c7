"""Offer-context feature views: category affinity and the tracked order."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64, String

from features.repo.entities import category, customer, order
from features.repo.sources import customer_category_source, order_source

# A customer's history with one category: the candidate offers are categories. No TTL, as
# for customer snapshots: an old purchase is still an affinity.
customer_category = FeatureView(
    name="customer_category",
    entities=[customer, category],
    ttl=timedelta(0),
    schema=[
        Field(name="category_orders_total", dtype=Int64, description="Orders with the category."),
        Field(name="category_spend_total", dtype=Float64, description="Spend in the category."),
        Field(name="category_returns_total", dtype=Int64, description="Returns in the category."),
        Field(
            name="category_last_purchase_epoch",
            dtype=Float64,
            description="Latest purchase in the category, epoch seconds.",
        ),
    ],
    source=customer_category_source,
    online=True,
    description="Purchases and returns per (customer, category), daily snapshots.",
)

# What the tracked order holds, so offers complement it, and where its parcel is (a row at
# the order, at dispatch and at delivery), so an offer can tell a late parcel.
order_contents = FeatureView(
    name="order_contents",
    entities=[order],
    ttl=timedelta(0),
    schema=[
        Field(name="order_customer_id", dtype=String, description="Who placed the order."),
        Field(name="order_total", dtype=Float64, description="Order total."),
        Field(name="order_items", dtype=Int64, description="Units ordered."),
        Field(
            name="order_n_categories", dtype=Int64, description="Distinct categories in the order."
        ),
        Field(name="order_categories", dtype=String, description="Categories, '|'-joined."),
        Field(name="order_main_category", dtype=String, description="Category of most spend."),
        Field(
            name="order_promised_epoch",
            dtype=Float64,
            description="Promised delivery of the order's parcel once dispatched, epoch seconds.",
        ),
        Field(
            name="order_delivered_epoch",
            dtype=Float64,
            description="Delivery of the order's parcel once delivered, epoch seconds.",
        ),
    ],
    source=order_source,
    online=True,
    description="Contents of each order and its parcel's state.",
)
