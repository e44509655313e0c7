"""Entities: the keys features hang on. Callers pass these ids, never feature vectors."""

from feast import Entity, ValueType

# Churn, outreach and the customer half of every offer decision are about a customer.
customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A customer of the shop.",
)

# Delay risk and delivery estimates are about one parcel.
shipment = Entity(
    name="shipment",
    join_keys=["shipment_id"],
    value_type=ValueType.STRING,
    description="One parcel handed to a carrier.",
)

# The tracking page shows one order; its contents shape the offer.
order = Entity(
    name="order",
    join_keys=["order_id"],
    value_type=ValueType.STRING,
    description="One order.",
)

# Offers are chosen per category, so affinity is keyed by (customer, category).
category = Entity(
    name="category",
    join_keys=["category"],
    value_type=ValueType.STRING,
    description="A merchandising category (with customer: the customer's affinity to it).",
)
