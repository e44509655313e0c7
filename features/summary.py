"""A one-screen summary of a business held in contract tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc


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


def late_mask(shipments: pa.Table, as_of: pa.Scalar | None = None) -> pa.ChunkedArray:
    """Late = delivered after the promise, or still undelivered once the promise has passed.

    Args:
        shipments: Shipments with `promised_ts` and `delivered_ts`.
        as_of: The instant at which undelivered parcels are judged; by default the latest
            timestamp seen in the table, so parcels whose promise is still ahead are not late.
    """
    promised = shipments.column("promised_ts")
    delivered = shipments.column("delivered_ts")
    if as_of is None:
        as_of = pc.max_element_wise(pc.max(shipments.column("shipped_ts")), pc.max(delivered))
    undelivered_late = pc.and_(pc.is_null(delivered), pc.less(promised, as_of))
    return pc.or_(pc.fill_null(pc.greater(delivered, promised), False), undelivered_late)


def summarize(tables: dict[str, pa.Table]) -> BusinessSummary:
    """Summarise the tables that are present."""
    orders = tables["orders"]
    shipments = tables.get("shipments")
    contacts = tables.get("contacts")
    offers = tables.get("offers")
    late_rate = None
    if shipments is not None and shipments.num_rows:
        late_rate = pc.mean(late_mask(shipments).cast(pa.float64())).as_py()
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
        late_rate=late_rate,
        contacts=None if contacts is None else contacts.num_rows,
        contacts_by_reason=by_reason,
        offers=None if offers is None else offers.num_rows,
        acceptance_rate=acceptance,
        first_ts=str(pc.min(order_ts).as_py()) if orders.num_rows else None,
        last_ts=str(pc.max(order_ts).as_py()) if orders.num_rows else None,
    )
