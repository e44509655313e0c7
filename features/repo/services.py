"""Feature services: one per model version, so a trained model pins the exact features it
was trained on and serving asks for the same ones."""

from feast import FeatureService

from features.repo.customer_views import customer_snapshots
from features.repo.offer_views import customer_category, order_contents
from features.repo.shipment_views import shipment_events

# Delay risk at dispatch and after each scan.
delay_risk_v1 = FeatureService(
    name="delay_risk_v1",
    features=[shipment_events],
    description="Features of the delay-risk model, version 1.",
)

# Delivery date and window, from the same shipment state.
delivery_estimate_v1 = FeatureService(
    name="delivery_estimate_v1",
    features=[shipment_events],
    description="Features of the delivery-estimate model, version 1.",
)

# Churn by contact reason from the daily customer snapshot.
churn_v1 = FeatureService(
    name="churn_v1",
    features=[customer_snapshots],
    description="Features of the churn model, version 1.",
)

# Next-best offer: who the customer is, their history with the candidate category, and
# what the tracked order holds.
next_best_offer_v1 = FeatureService(
    name="next_best_offer_v1",
    features=[
        customer_snapshots[
            [
                "orders_total",
                "monetary_total",
                "last_order_epoch",
                "signup_epoch",
                "late_deliveries_90d",
                "returns_total",
                "offers_received_90d",
                "offers_accepted_total",
                "unresolved_contacts_90d",
                "consent_marketing",
            ]
        ],
        customer_category,
        order_contents,
    ],
    description="Features of the next-best-offer model, version 1.",
)
