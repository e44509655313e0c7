"""Customer features as daily snapshots.

A snapshot stamped at midnight D describes the customer from everything stamped strictly
before D. Rows exist only for the days on which some value changes: the day after any event
of the customer, and the days on which an event leaves a trailing window (30, 90 or 365 days
later). Between two rows nothing changes, so an as-of join on these rows equals a join on a
full daily grid at a fraction of the size. Features that move with the clock alone (days
since the last order, tenure) are stored as epoch instants and derived at decision time by
`features.build.derived`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from features.build.asof import EventIndex
from features.build.common import (
    US_PER_DAY,
    US_PER_S,
    epoch_s,
    frame,
    is_missing_us,
    next_midnight_us,
    us,
)
from features.build.shipments import late_outcomes
from features.contract.schema import CONTACT_REASONS

CONTACT_WINDOWS_DAYS = (30, 90, 365)
STATIC_COLUMNS = (
    "region",
    "timezone",
    "language",
    "preferred_channel",
    "consent_email",
    "consent_sms",
    "consent_voice",
    "consent_marketing",
)


@dataclass
class _Events:
    """Events of one kind: customer code, instant (µs), and aligned value columns."""

    customer: np.ndarray
    ts: np.ndarray
    values: dict[str, np.ndarray]

    def index(self) -> EventIndex:
        return EventIndex.build(self.customer, self.ts)


def _customer_codes(ids: pd.Series, lookup: pd.Index) -> np.ndarray:
    return lookup.get_indexer(ids)


def _orders_of(tables, lookup: pd.Index) -> tuple[pd.DataFrame | None, pd.Series | None]:
    """Orders with customer codes, and a map order_id → customer code."""
    orders = frame(tables, "orders", ["order_id", "customer_id", "order_ts", "amount"])
    orders["code"] = _customer_codes(orders["customer_id"], lookup)
    orders = orders[orders["code"] >= 0]
    return orders, pd.Series(orders["code"].to_numpy(), index=orders["order_id"])


def _kept(customer: np.ndarray, ts: np.ndarray, values: dict[str, np.ndarray]) -> _Events:
    """Drop events whose customer or instant is unknown."""
    keep = (customer >= 0) & ~is_missing_us(ts)
    return _Events(customer[keep], ts[keep], {k: np.asarray(v)[keep] for k, v in values.items()})


def _snapshot_grid(customers: pd.DataFrame, all_events: list[_Events], end_us: int):
    """(customer code, snapshot instant) for every day on which a value may change."""
    code_parts = [np.arange(len(customers))]
    day_parts = [next_midnight_us(us(customers["signup_ts"]))]
    for events, windows in all_events:
        day = next_midnight_us(events.ts)
        code_parts.append(events.customer)
        day_parts.append(day)
        for days in windows:
            code_parts.append(events.customer)
            day_parts.append(day + days * US_PER_DAY)
    codes = np.concatenate(code_parts)
    days = np.concatenate(day_parts)
    keep = days <= end_us
    # One row per (customer, day): encode the pair as one integer to deduplicate fast.
    pair = codes[keep].astype(np.int64) * (2**24) + (days[keep] // US_PER_DAY)
    pair = np.unique(pair)
    return pair // (2**24), (pair % (2**24)) * US_PER_DAY


def customer_features(tables: dict[str, pa.Table], end: pd.Timestamp | None = None):
    """Build the customer snapshot table.

    Args:
        tables: Raw contract tables; only customers and orders are required.
        end: Last instant to snapshot; by default the midnight after the latest event.

    Returns:
        One row per (customer_id, event_ts) with the features listed in
        `features/repo/customer_views.py`.
    """
    customers = frame(tables, "customers")
    lookup = pd.Index(customers["customer_id"])
    orders, order_customer = _orders_of(tables, lookup)

    kinds: list[tuple[_Events, tuple[int, ...]]] = []
    order_ev = _kept(
        orders["code"].to_numpy(), us(orders["order_ts"]), {"amount": orders["amount"].to_numpy()}
    )
    kinds.append((order_ev, (365,)))

    shipments = frame(tables, "shipments", ["order_id", "promised_ts", "delivered_ts"])
    outcome_ev = None
    if shipments is not None:
        known, late = late_outcomes(shipments)
        code = order_customer.reindex(shipments["order_id"]).fillna(-1).to_numpy(np.int64)
        outcome_ev = _kept(code, known, {"late": late.astype(np.float64)})
        kinds.append((outcome_ev, (90,)))

    contacts = frame(tables, "contacts")
    contact_ev = None
    if contacts is not None:
        values = {
            "reason": contacts["reason"].to_numpy(dtype=object),
            "resolved": contacts["resolved_first_contact"].to_numpy(dtype=np.float64),
            "csat": contacts["csat"].to_numpy(dtype=np.float64, na_value=np.nan),
            "ces": contacts["ces"].to_numpy(dtype=np.float64, na_value=np.nan),
            "nps": contacts["nps"].to_numpy(dtype=np.float64, na_value=np.nan),
            "wait_s": contacts["wait_s"].to_numpy(dtype=np.float64),
            "transfers": contacts["transfers"].to_numpy(dtype=np.float64),
            "ai": (contacts["handled_by"] == "ai_agent").to_numpy(dtype=np.float64),
        }
        code = _customer_codes(contacts["customer_id"], lookup)
        contact_ev = _kept(code, us(contacts["ts"]), values)
        kinds.append((contact_ev, CONTACT_WINDOWS_DAYS))

    returns = frame(tables, "returns", ["order_id", "requested_ts", "refunded_ts"])
    request_ev = refund_ev = None
    if returns is not None:
        code = order_customer.reindex(returns["order_id"]).fillna(-1).to_numpy(np.int64)
        requested, refunded = us(returns["requested_ts"]), us(returns["refunded_ts"])
        request_ev = _kept(code, requested, {})
        lag_days = (refunded - requested) / US_PER_DAY
        refund_ev = _kept(code, refunded, {"lag_days": lag_days})
        kinds += [(request_ev, ()), (refund_ev, ())]

    offers = frame(tables, "offers", ["customer_id", "ts", "offer_type", "accepted_ts"])
    shown_ev = accepted_ev = None
    if offers is not None:
        offers = offers[offers["offer_type"] != "none"]
        code = _customer_codes(offers["customer_id"], lookup)
        shown_ev = _kept(code, us(offers["ts"]), {})
        accepted_ev = _kept(code, us(offers["accepted_ts"]), {})
        kinds += [(shown_ev, (90,)), (accepted_ev, ())]

    invoices = frame(tables, "invoices", ["customer_id", "due_date", "paid_ts"])
    overdue_ev = settled_ev = None
    if invoices is not None:
        code = _customer_codes(invoices["customer_id"], lookup)
        due, paid = us(invoices["due_date"]), us(invoices["paid_ts"])
        # An invoice becomes overdue at its due date if it is unpaid then; it stops being
        # open when it is paid.
        late_paid = is_missing_us(paid) | (paid > due)
        overdue_ev = _kept(np.where(late_paid, code, -1), due, {})
        settled = late_paid & ~is_missing_us(paid)
        settled_ev = _kept(np.where(settled, code, -1), paid, {})
        kinds += [(overdue_ev, ()), (settled_ev, ())]

    if end is None:
        latest = max(int(e.ts.max()) for e, _ in kinds if len(e.ts))
        end_us = int(next_midnight_us(np.array([latest]))[0])
    else:
        end_us = int(pd.Timestamp(end).value // 1000)
    row_code, row_ts = _snapshot_grid(customers, kinds, end_us)

    out: dict[str, np.ndarray] = {
        "customer_id": customers["customer_id"].to_numpy(dtype=object)[row_code],
        "event_ts": row_ts,
        "signup_epoch": epoch_s(us(customers["signup_ts"]))[row_code],
    }
    for column in STATIC_COLUMNS:
        out[column] = customers[column].to_numpy()[row_code]

    def windowed(index: EventIndex, days: int, values=None) -> np.ndarray:
        since = row_ts - days * US_PER_DAY
        if values is None:
            return index.count(row_code, row_ts) - index.count(row_code, since)
        return index.total(values, row_code, row_ts) - index.total(values, row_code, since)

    idx = order_ev.index()
    amount = order_ev.values["amount"]
    out["orders_total"] = idx.count(row_code, row_ts)
    out["orders_365d"] = windowed(idx, 365)
    out["monetary_total"] = idx.total(amount, row_code, row_ts)
    out["monetary_365d"] = windowed(idx, 365, amount)
    missing = np.iinfo(np.int64).min
    # The first order is known from the moment it is placed.
    first_by_code = pd.Series(order_ev.ts).groupby(order_ev.customer).min()
    first_order = first_by_code.reindex(row_code).to_numpy(dtype=np.float64, na_value=np.nan)
    out["first_order_epoch"] = np.where(first_order < row_ts, first_order / US_PER_S, np.nan)
    last_order = idx.last(order_ev.ts, row_code, row_ts, fill=missing)
    out["last_order_epoch"] = epoch_s(last_order)
    out["last_order_amount"] = idx.last(amount, row_code, row_ts)

    if outcome_ev is not None:
        idx = outcome_ev.index()
        out["deliveries_total"] = idx.count(row_code, row_ts)
        out["late_deliveries_total"] = idx.total(outcome_ev.values["late"], row_code, row_ts)
        out["late_deliveries_90d"] = windowed(idx, 90, outcome_ev.values["late"])

    if contact_ev is not None:
        idx = contact_ev.index()
        v = contact_ev.values
        n = idx.count(row_code, row_ts)
        out["contacts_total"] = n
        for reason in CONTACT_REASONS:
            mask = v["reason"] == reason
            by_reason = EventIndex.build(contact_ev.customer[mask], contact_ev.ts[mask])
            for days in CONTACT_WINDOWS_DAYS:
                out[f"contacts_{reason}_{days}d"] = windowed(by_reason, days)
        reasons = idx.last(v["reason"].astype(object), row_code, row_ts, fill=None)
        out["last_contact_reason"] = reasons
        out["last_contact_epoch"] = epoch_s(idx.last(contact_ev.ts, row_code, row_ts, fill=missing))
        unresolved = 1.0 - v["resolved"]
        out["unresolved_contacts_90d"] = windowed(idx, 90, unresolved)
        with np.errstate(invalid="ignore", divide="ignore"):
            resolved = idx.total(v["resolved"], row_code, row_ts)
            out["fcr_rate"] = np.where(n > 0, resolved / n, np.nan)
            for name in ("wait_s", "transfers", "ai"):
                total = idx.total(v[name], row_code, row_ts)
                label = {"wait_s": "wait_s_mean", "transfers": "transfers_mean", "ai": "ai_share"}
                out[label[name]] = np.where(n > 0, total / n, np.nan)
            for name in ("csat", "ces", "nps"):
                answered = idx.total(~np.isnan(v[name]), row_code, row_ts)
                total = idx.total(v[name], row_code, row_ts)
                out[f"{name}_mean"] = np.where(answered > 0, total / answered, np.nan)

    if request_ev is not None:
        requests = request_ev.index().count(row_code, row_ts)
        refund_idx = refund_ev.index()
        refunds = refund_idx.count(row_code, row_ts)
        out["returns_total"] = requests
        out["open_returns"] = requests - refunds
        with np.errstate(invalid="ignore", divide="ignore"):
            lag = refund_idx.total(refund_ev.values["lag_days"], row_code, row_ts)
            out["refund_lag_days_mean"] = np.where(refunds > 0, lag / refunds, np.nan)

    if shown_ev is not None:
        shown = shown_ev.index()
        out["offers_received_total"] = shown.count(row_code, row_ts)
        out["offers_received_90d"] = windowed(shown, 90)
        out["offers_accepted_total"] = accepted_ev.index().count(row_code, row_ts)

    if overdue_ev is not None:
        overdue = overdue_ev.index().count(row_code, row_ts)
        out["invoices_overdue_total"] = overdue
        out["invoices_overdue_open"] = overdue - settled_ev.index().count(row_code, row_ts)

    result = pd.DataFrame(out)
    result["event_ts"] = pd.to_datetime(result["event_ts"], unit="us", utc=True)
    return result
