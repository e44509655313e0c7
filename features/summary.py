"""A one-screen summary of a business held in contract tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.build.shipments import late_outcomes
from features.instants import watermark


@dataclass(frozen=True)
class BusinessSummary:
    """Headline counts and rates of a raw dataset; missing tables give None."""

    customers: int
    orders: int
    shipments: int | None
    late_rate: float | None
    contacts: int | None
    contacts_by_reason: dict[str, int] = field(default_factory=dict)
    offers: int | None = None
    acceptance_rate: float | None = None
    first_ts: str | None = None
    last_ts: str | None = None


def late_rate(shipments: pa.Table, data_end: pd.Timestamp | None = None) -> float | None:
    """Share of parcels late among those whose outcome is known by the data's end.

    Args:
        shipments: The raw shipments.
        data_end: The data's end (default: the latest dispatch or delivery); a parcel whose
            promise lies beyond it and that is not delivered yet has no outcome.
    """
    frame = shipments.select(["shipped_ts", "promised_ts", "delivered_ts"]).to_pandas()
    known, late = late_outcomes(frame)
    if data_end is None:
        data_end = watermark({"shipments": shipments}, happened=True)
    decided = known <= pd.Timestamp(data_end).value // 1000
    return float(late[decided].mean()) if decided.any() else None


def summarize(tables: dict[str, pa.Table]) -> BusinessSummary:
    """Summarise the tables that are present."""
    orders = tables["orders"]
    shipments = tables.get("shipments")
    contacts = tables.get("contacts")
    offers = tables.get("offers")
    rate = None
    if shipments is not None and shipments.num_rows:
        rate = late_rate(shipments, watermark(tables, happened=True))
    by_reason: dict[str, int] = {}
    if contacts is not None:
        counts = contacts.group_by("reason").aggregate([("reason", "count")])
        pairs = zip(
            counts.column("reason").to_pylist(),
            counts.column("reason_count").to_pylist(),
            strict=True,
        )
        by_reason = dict(sorted(pairs, key=lambda kv: -kv[1]))
    acceptance = None
    if offers is not None and offers.num_rows:
        shown = offers.filter(pc.not_equal(offers.column("offer_type"), "none"))
        if shown.num_rows:
            acceptance = pc.mean(
                pc.is_valid(shown.column("accepted_ts")).cast(pa.float64())
            ).as_py()
    order_ts = orders.column("order_ts")
    return BusinessSummary(
        customers=tables["customers"].num_rows,
        orders=orders.num_rows,
        shipments=None if shipments is None else shipments.num_rows,
        late_rate=rate,
        contacts=None if contacts is None else contacts.num_rows,
        contacts_by_reason=by_reason,
        offers=None if offers is None else offers.num_rows,
        acceptance_rate=acceptance,
        first_ts=str(pc.min(order_ts).as_py()) if orders.num_rows else None,
        last_ts=str(pc.max(order_ts).as_py()) if orders.num_rows else None,
    )
