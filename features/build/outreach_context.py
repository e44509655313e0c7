"""What an outreach action is about, as of the moment it is decided: the subject's order.

An action is about an order's experience: a delay notice about a parcel, a recovery call
about a contact or a lost parcel, a reminder about an invoice, a satisfaction check about a
delivery. Whether it works depends on that experience (was the parcel late, the contact
unresolved, an item damaged), not only on the customer's history, so the uplift model reads
it beside the customer's features. The subject's order is the one its `subject_id` names
(through the shipment, contact or invoice; an order id names itself); an action about the
customer as a whole (a win-back offer) is about the customer's latest order before the
decision.

Every value counts only what happened strictly before the decision instant `ts`, from the
raw contract tables, so training (at each logged row's ts) and the daily queue (at its
as-of instant) compute it alike. A table a source lacks leaves its features missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract.schema import OUTREACH_SUBJECTS

HOUR_S = 3_600.0
DAY_S = 86_400.0
# Feature → description (the reason codes' words).
CONTEXT_FEATURES = {
    "subject_order_amount": "Amount of the order the action is about",
    "subject_order_age_days": "Time since the order the action is about",
    "subject_first_order": "The order the action is about is the customer's first",
    "subject_delivered": "Its parcel was delivered",
    "subject_hours_past_promise": "How long its parcel is (or was) past the promised delivery",
    "subject_exception_scans": "Exception scans of its parcel",
    "subject_contacts": "Contacts about the order",
    "subject_unresolved_contacts": "Contacts about the order not resolved at first contact",
    "subject_complaints": "Complaints about the order",
    "subject_returns": "Return requests on the order",
    "subject_damaged_returns": "Items of the order returned damaged",
}
_ID_COLUMNS = {"shipments": "shipment_id", "contacts": "contact_id", "invoices": "invoice_id"}
# Rows whose context is computed at once (`outreach_context`).
CHUNK_ROWS = 500_000


def _frame(
    tables: Mapping[str, pa.Table],
    name: str,
    columns: list[str],
    among: tuple[str, pd.Series] | None = None,
) -> pd.DataFrame | None:
    """A raw table's columns as a frame; given `among` (a column and values), only the rows
    whose column holds one of the values (filtered in Arrow, before the conversion)."""
    table = tables.get(name)
    if table is None or any(c not in table.column_names for c in columns):
        return None
    table = table.select(columns)
    if among is not None:
        column, values = among
        wanted = pa.array(values.dropna().unique(), type=table.schema.field(column).type)
        table = table.filter(pc.is_in(table.column(column), value_set=wanted))
    return table.to_pandas()


def _seconds(values) -> np.ndarray:
    """Epoch seconds (float, NaN where missing) of instants."""
    values = pd.Series(values)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        # Already instants: `to_datetime` would first sample them as Timestamp objects.
        instants = values.dt.tz_convert("UTC")
    else:
        instants = pd.to_datetime(values, utc=True)
    out = instants.to_numpy(dtype="datetime64[us]").astype(np.int64) / 1e6
    return np.where(instants.isna().to_numpy(), np.nan, out)


@dataclass(frozen=True)
class _Orders:
    """The orders table as the rows look it up, worked out once for every chunk."""

    # By order id (each id's first row): `_ot` (placed, epoch seconds), `amount` and
    # `_first` (1.0 for the customer's first order).
    at: pd.DataFrame
    # `_c` (the customer's code in `customers`), `_t` (placed) and order_id, in time
    # order: a customer's latest order.
    by_time: pd.DataFrame
    # The customers who ordered, each once: the codes of `by_time`.
    customers: pd.Index


def _orders(tables: Mapping[str, pa.Table]) -> _Orders | None:
    """The orders' look-ups (None without an orders table holding the columns read)."""
    orders = _frame(tables, "orders", ["order_id", "customer_id", "order_ts", "amount"])
    if orders is None:
        return None
    placed = _seconds(orders["order_ts"])
    first = pd.Series(placed).groupby(orders["customer_id"].to_numpy()).transform("min")
    at = pd.DataFrame(
        {
            "order_id": orders["order_id"].to_numpy(dtype=object),
            "_ot": placed,
            "amount": orders["amount"].to_numpy(dtype=np.float64, na_value=np.nan),
            "_first": (placed == first.to_numpy()).astype(np.float64),
        }
    )
    codes, customers = pd.factorize(orders["customer_id"].to_numpy(dtype=object))
    by_time = pd.DataFrame(
        {"_c": codes.astype(np.int64), "_t": placed, "order_id": orders["order_id"].astype(object)}
    ).sort_values("_t", kind="stable")
    # Each chunk of rows looks its ids up in these indexes, whose hash tables are built once.
    return _Orders(
        at.drop_duplicates("order_id").set_index("order_id"), by_time, pd.Index(customers)
    )


def subject_orders(
    rows: pd.DataFrame, tables: Mapping[str, pa.Table], orders: _Orders | None = None
) -> np.ndarray:
    """The order each row's action is about (None where none is known).

    Args:
        rows: customer_id, action, subject_id, ts.
        tables: Raw tables (orders, and shipments, contacts, invoices where present).
        orders: The orders' look-ups (`_orders(tables)` when None).
    """
    order = np.full(len(rows), None, dtype=object)
    subject = rows["subject_id"].astype(object).to_numpy()
    actions = rows["action"].astype(object).to_numpy()
    orders = orders if orders is not None else _orders(tables)
    for table, key in _ID_COLUMNS.items():
        # Only the ids named: the lookup keeps each id's first row, whichever rows it drops.
        found = _frame(tables, table, [key, "order_id"], among=(key, pd.Series(subject)))
        if found is None:
            continue
        # An id counts only where the action may name that table.
        allowed = np.array([table in OUTREACH_SUBJECTS.get(a, ()) for a in actions])
        lookup = found.drop_duplicates(key).set_index(key)["order_id"]
        hit = pd.Series(subject).map(lookup).to_numpy(dtype=object)
        take = allowed & pd.isna(order) & ~pd.isna(hit)
        order[take] = hit[take]
    if orders is None:
        return order
    allowed = np.array(["orders" in OUTREACH_SUBJECTS.get(a, ()) for a in actions])
    named = allowed & pd.isna(order) & (orders.at.index.get_indexer(subject) >= 0)
    order[named] = subject[named]
    # Otherwise the customer's latest order strictly before ts.
    rest = np.flatnonzero(pd.isna(order))
    if len(rest):
        customer = rows["customer_id"].to_numpy(dtype=object)[rest]
        left = pd.DataFrame(
            {
                "_row": rest,
                # A customer without orders has code −1, which no order has.
                "_c": orders.customers.get_indexer(customer).astype(np.int64),
                # The column, not its values: a tz-aware column's values are Timestamp objects.
                "_t": _seconds(rows["ts"].iloc[rest]),
            }
        ).sort_values("_t", kind="stable")
        left = left[np.isfinite(left["_t"])]
        matched = pd.merge_asof(left, orders.by_time, on="_t", by="_c", allow_exact_matches=False)
        order[matched["_row"].to_numpy()] = matched["order_id"].to_numpy(dtype=object)
    return order


def _taken(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """`values[positions]`, missing (NaN, or None for objects) where a position is −1."""
    out = np.full(len(positions), None if values.dtype == object else np.nan, dtype=values.dtype)
    found = positions >= 0
    out[found] = values[positions[found]]
    return out


def _counts_before(
    rows: pd.DataFrame, events: pd.DataFrame, key: str, time: str, flags: dict[str, pd.Series]
) -> dict[str, np.ndarray]:
    """Per row, events on the row's `key` strictly before its ts: the count of each flag.

    The events are put in order by (key, instant) once and each row's events found by two
    binary searches, instead of joining every row to every event of its key (the join of a
    million customers' chunk to its parcels' scans took most of the time).
    """
    n = len(rows)
    codes, _ = pd.factorize(
        np.concatenate([rows[key].to_numpy(dtype=object), events[key].to_numpy(dtype=object)])
    )
    row_code, event_code = codes[:n].astype(np.int64), codes[n:].astype(np.int64)
    row_t = rows["_t"].to_numpy(dtype=np.float64)
    event_t = _seconds(events[time])
    counted = (event_code >= 0) & np.isfinite(event_t)
    # Instants as their rank among every instant, so that (key, instant) is one integer.
    instants = np.unique(np.concatenate([row_t[np.isfinite(row_t)], event_t[counted]]))
    width = np.int64(len(instants) + 1)
    event_key = event_code[counted] * width + np.searchsorted(instants, event_t[counted])
    order = np.argsort(event_key, kind="stable")
    event_key = event_key[order]
    asked = (row_code >= 0) & np.isfinite(row_t)
    block = np.where(asked, row_code, 0) * width
    first = np.searchsorted(event_key, block, side="left")
    # Events of the key at an instant of lower rank: strictly before the row's ts.
    rank = np.searchsorted(instants, np.where(asked, row_t, 0.0))
    until = np.searchsorted(event_key, block + rank, side="left")
    out = {}
    for name, flag in flags.items():
        values = np.asarray(flag.reindex(events.index), dtype=np.int64)[counted][order]
        total = np.concatenate([[0], np.cumsum(values)])
        out[name] = np.where(asked, total[until] - total[first], 0).astype(np.float64)
    return out


def outreach_context(
    rows: pd.DataFrame, tables: Mapping[str, pa.Table], chunk_rows: int = CHUNK_ROWS
) -> pd.DataFrame:
    """`CONTEXT_FEATURES` of each row's subject order as of its ts.

    Each row's values depend on that row alone, so the rows are taken `chunk_rows` at a
    time: the joins of a chunk with its orders' parcels, scans, contacts and returns are
    let go of before the next, and the memory they take is bounded by the chunk.

    Args:
        rows: customer_id, action, subject_id, ts (UTC instants).
        tables: Raw contract tables; orders is needed, the others used where present.
        chunk_rows: Rows computed at once.

    Returns:
        One row per input row (same index), one column per context feature.
    """
    if len(rows) == 0:
        return pd.DataFrame(index=rows.index, columns=list(CONTEXT_FEATURES), dtype=np.float64)
    orders = _orders(tables)
    return pd.concat(
        [
            _context(rows.iloc[i : i + chunk_rows], tables, orders)
            for i in range(0, len(rows), chunk_rows)
        ]
    )


def _context(
    rows: pd.DataFrame, tables: Mapping[str, pa.Table], orders: _Orders | None
) -> pd.DataFrame:
    """`outreach_context` of one chunk of rows, with the orders' look-ups."""
    out = pd.DataFrame(index=rows.index, columns=list(CONTEXT_FEATURES), dtype=np.float64)
    if orders is None:
        return out
    work = pd.DataFrame(
        {
            "order_id": subject_orders(rows, tables, orders),
            "customer_id": rows["customer_id"].to_numpy(dtype=object),
            "_t": _seconds(rows["ts"]),
        }
    )
    at = orders.at
    # Each row's order's place in `at` (−1 for none), looked up once for every column.
    place = at.index.get_indexer(work["order_id"].to_numpy(dtype=object))

    def of_order(column: str) -> np.ndarray:
        return _taken(at[column].to_numpy(dtype=np.float64), place)

    known = of_order("_ot")
    # An order placed at or after ts is not yet known then.
    before = known < work["_t"].to_numpy()
    work.loc[~before, "order_id"] = None
    place = np.where(before, place, -1)

    out["subject_order_amount"] = of_order("amount")
    out["subject_order_age_days"] = (work["_t"].to_numpy() - of_order("_ot")) / DAY_S
    out["subject_first_order"] = of_order("_first")

    # Only the parcels of these orders: the lookup keeps each order's first parcel.
    shipments = _frame(
        tables,
        "shipments",
        ["shipment_id", "order_id", "promised_ts", "delivered_ts"],
        among=("order_id", work["order_id"]),
    )
    if shipments is not None:
        parcel = shipments.drop_duplicates("order_id").set_index("order_id")
        t = work["_t"].to_numpy()
        at_parcel = parcel.index.get_indexer(work["order_id"].to_numpy(dtype=object))
        has_parcel = at_parcel >= 0
        promised = _taken(_seconds(parcel["promised_ts"]), at_parcel)
        delivered = _taken(_seconds(parcel["delivered_ts"]), at_parcel)
        is_delivered = np.isfinite(delivered) & (delivered < t)
        until = np.where(is_delivered, delivered, t)
        out["subject_delivered"] = np.where(has_parcel, is_delivered.astype(np.float64), np.nan)
        out["subject_hours_past_promise"] = np.where(
            has_parcel, (until - promised) / HOUR_S, np.nan
        )
        work["shipment_id"] = _taken(parcel["shipment_id"].to_numpy(dtype=object), at_parcel)
        # Only the scans of these parcels: the others are never counted.
        scans = _frame(
            tables,
            "tracking_events",
            ["shipment_id", "event_type", "event_ts"],
            among=("shipment_id", work["shipment_id"]),
        )
        if scans is not None:
            counted = _counts_before(
                work,
                scans,
                "shipment_id",
                "event_ts",
                {"exceptions": (scans["event_type"] == "exception").astype(np.int64)},
            )
            out["subject_exception_scans"] = np.where(has_parcel, counted["exceptions"], np.nan)
    has_order = work["order_id"].notna().to_numpy()
    contacts = _frame(
        tables,
        "contacts",
        ["order_id", "ts", "reason", "resolved_first_contact"],
        among=("order_id", work["order_id"]),
    )
    if contacts is not None:
        resolved = contacts["resolved_first_contact"].astype("boolean").fillna(True)
        counted = _counts_before(
            work,
            contacts,
            "order_id",
            "ts",
            {
                "all": pd.Series(1, index=contacts.index),
                "unresolved": (~resolved).astype(np.int64),
                "complaints": (contacts["reason"] == "complaint").astype(np.int64),
            },
        )
        out["subject_contacts"] = np.where(has_order, counted["all"], np.nan)
        out["subject_unresolved_contacts"] = np.where(has_order, counted["unresolved"], np.nan)
        out["subject_complaints"] = np.where(has_order, counted["complaints"], np.nan)
    returns = _frame(
        tables,
        "returns",
        ["order_id", "requested_ts", "reason"],
        among=("order_id", work["order_id"]),
    )
    if returns is not None:
        counted = _counts_before(
            work,
            returns,
            "order_id",
            "requested_ts",
            {
                "all": pd.Series(1, index=returns.index),
                "damaged": (returns["reason"] == "damaged").astype(np.int64),
            },
        )
        out["subject_returns"] = np.where(has_order, counted["all"], np.nan)
        out["subject_damaged_returns"] = np.where(has_order, counted["damaged"], np.nan)
    return out
