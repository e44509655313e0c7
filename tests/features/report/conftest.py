"""A hand-made shop of five customers whose report figures are worked out by hand.

Orders (customer, day, amount): c1 o1 2024-01-10 100, o2 2024-02-01 50; c2 o3 2024-01-15
80; c3 o4 2024-03-01 60, o5 2024-08-01 40; c4 o6 2024-12-20 30; c5 o7 2024-04-01 20, o8
2024-05-01 70. The data end with contact ct5 on 2025-06-30.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from features.contract.schema import CONTRACT


def at(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T12:00:00").replace(tzinfo=UTC)


def table(name: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=CONTRACT[name].source_schema)


def customer(customer_id: str) -> dict:
    return {
        "customer_id": customer_id,
        "signup_ts": at("2024-01-01"),
        "region": "north",
        "timezone": "Europe/Berlin",
        "language": "de",
        "preferred_channel": "email",
        "consent_email": True,
        "consent_sms": False,
        "consent_voice": False,
        "consent_marketing": True,
    }


def order(order_id: str, customer_id: str, day: str, amount: float) -> dict:
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "order_ts": at(day),
        "amount": amount,
        "payment_method": "card",
    }


def shipment(shipment_id: str, order_id: str, shipped: str, promised: str, delivered: str):
    return {
        "shipment_id": shipment_id,
        "order_id": order_id,
        "carrier": "dhl",
        "service_level": "standard",
        "origin_region": "north",
        "destination_region": "north",
        "distance_km": 100.0,
        "shipped_ts": at(shipped),
        "promised_ts": at(promised),
        "delivered_ts": at(delivered),
    }


CONTACT_FIELDS = (
    *("contact_id", "customer_id", "order_id", "ts", "reason", "handled_by"),
    *("resolved_first_contact", "transfers", "wait_s", "handle_s", "csat", "ces", "nps"),
)
# One row per contact, in the order of CONTACT_FIELDS.
CONTACTS = [
    ("ct1", "c1", "o1", "2024-01-12", "delivery_delay", "ai_agent", True, 0, 10, 100, 5, 1, 10),
    ("ct2", "c2", "o3", "2024-01-20", "delivery_delay", "human", False, 1, 30, 300, 2, 5, 3),
    # Names no order: placed on o4, whose 90 days it falls in.
    ("ct3", "c3", None, "2024-03-10", "billing_dispute", "human", True, 0, 20, 200, 4, 2, 8),
    (
        "ct4",
        "c3",
        "o5",
        "2024-08-05",
        "delivery_delay",
        "human",
        True,
        0,
        40,
        400,
        None,
        None,
        None,
    ),
    ("ct5", "c4", "o6", "2025-06-30", "complaint", "ai_agent", False, 0, 0, 50, 1, 7, 0),
]


def contact(values: tuple) -> dict:
    row = dict(zip(CONTACT_FIELDS, values, strict=True))
    return {
        **row,
        "ts": at(row["ts"]),
        "wait_s": float(row["wait_s"]),
        "handle_s": float(row["handle_s"]),
        "channel": "chat",
        "language": "de",
    }


@pytest.fixture
def shop() -> dict[str, pa.Table]:
    """The hand-made shop as contract tables."""
    return {
        "customers": table("customers", [customer(f"c{i}") for i in range(1, 6)]),
        "orders": table(
            "orders",
            [
                order("o1", "c1", "2024-01-10", 100.0),
                order("o2", "c1", "2024-02-01", 50.0),
                order("o3", "c2", "2024-01-15", 80.0),
                order("o4", "c3", "2024-03-01", 60.0),
                order("o5", "c3", "2024-08-01", 40.0),
                order("o6", "c4", "2024-12-20", 30.0),
                order("o7", "c5", "2024-04-01", 20.0),
                order("o8", "c5", "2024-05-01", 70.0),
            ],
        ),
        "shipments": table(
            "shipments",
            [
                # Late: delivered two days after its promise.
                shipment("s1", "o1", "2024-01-11", "2024-01-14", "2024-01-16"),
                shipment("s3", "o3", "2024-01-16", "2024-01-19", "2024-01-18"),
                shipment("s4", "o4", "2024-03-02", "2024-03-05", "2024-03-04"),
                shipment("s7", "o7", "2024-04-02", "2024-04-05", "2024-04-05"),
            ],
        ),
        "contacts": table("contacts", [contact(values) for values in CONTACTS]),
    }
