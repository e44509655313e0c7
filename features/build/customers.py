"""Customer features as snapshots at the instants they change.

A snapshot stamped at instant s describes the customer from everything stamped strictly
before s. Rows exist only where some value changes: the whole second after any event of the
customer (and after the signup), and the UTC midnights at which an event leaves a trailing
window (the midnight after it plus 30, 90 or 365 days). Between two rows nothing changes, so
the newest row at or before a decision instant holds everything that happened before it (to
the second): a decision at 23:44 sees an order placed at 20:56 the same day. Trailing
windows count whole days, so the value as of any UTC midnight is that of a daily snapshot
at that midnight. Features that move with the clock alone (days since the last order,
tenure) are stored as epoch instants and derived at decision time by
`features.build.derived`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.build.common import (
    US_PER_DAY,
    US_PER_S,
    codes_in,
    epoch_s,
    frame,
    is_missing_us,
    next_midnight_us,
    spans,
    to_table,
    us,
)
from features.build.shipments import late_outcomes
from features.build.snapshots import Events, SnapshotGrid
from features.contract import subset
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


CONTACT_COLUMNS = [
    "ts",
    "order_id",
    "reason",
    "reason_inferred",
    "resolved_first_contact",
    "csat",
    "ces",
    "nps",
    "wait_s",
    "transfers",
    "handled_by",
]
# Customers whose events are prepared at once, and customers whose rows are built at once.
# At a million customers, preparing everyone peaked at 7.3 GiB and building 100,000
# customers' rows took about 3 GiB more; a night's increment by these sizes peaks at 3.3 GiB.
RANGE_CUSTOMERS = 250_000
CHUNK_CUSTOMERS = 25_000
# A refund slower than this, in days, is a bad experience (as slow as the slowest tenth of
# refunds on the simulated business); an effort score at or above this is a hard contact.
LONG_REFUND_DAYS = 14.0
HIGH_EFFORT_CES = 5.0
# What happened to the latest order so far: name → the value each experience event adds.
LAST_ORDER_VALUES = (
    "outcome_known",
    "late",
    "delivered",
    "days_late",
    "contacts",
    "unresolved",
    "complaint",
    "billing_dispute",
    "damaged_item",
    "high_effort",
    "returns",
    "long_refund",
)


@dataclass
class Prepared:
    """Every event of every customer, sorted by customer, ready to be cut into chunks."""

    customers: pa.Table
    kinds: dict[str, tuple[Events | None, tuple[int, ...]]]
    end_s: int


def customer_features(tables: dict[str, pa.Table], end: pd.Timestamp | None = None) -> pa.Table:
    """Build the customer snapshot table in one piece (see `customer_feature_chunks`)."""
    return pa.concat_tables(customer_feature_chunks(tables, end))


def customer_feature_chunks(
    tables: dict[str, pa.Table],
    end: pd.Timestamp | None = None,
    chunk_customers: int = CHUNK_CUSTOMERS,
    range_customers: int = RANGE_CUSTOMERS,
) -> Iterator[pa.Table]:
    """Build the customer snapshot table, a chunk of customers at a time.

    Args:
        tables: Raw contract tables; only customers and orders are required.
        end: Last instant to snapshot (rows stamped later are left out); by default the
            midnight after the latest event (`data_end`).
        chunk_customers: Customers per chunk; memory grows with it, results do not change.
        range_customers: Customers whose events are prepared at once (`prepare_range`);
            memory grows with it, results do not change.

    Yields:
        Rows (customer_id, event_ts) with the features listed in
        `features/repo/customer_views.py`, in customer order, each holding what happened
        strictly before its `event_ts`.
    """
    end = data_end(tables) if end is None else end
    for lo, hi in spans(tables["customers"].num_rows, range_customers):
        yield from range_snapshots(tables, lo, hi, end, chunk_customers)


def prepare_range(tables: dict[str, pa.Table], lo: int, hi: int, end: pd.Timestamp) -> Prepared:
    """The events of customers lo..hi-1 (positions in the customers table), prepared from
    the tables cut to them (`features.contract.subset`) and ending at `end`, the whole
    business's end: a customer's rows read only their own events, so they are what one
    preparation of every customer gives, at a memory that grows with the range."""
    ids = tables[subset.CUSTOMERS].column(subset.CUSTOMER_KEY)
    if lo > 0 or hi < len(ids):
        tables = subset.of_customers(tables, ids.slice(lo, hi - lo).combine_chunks())
    return prepare(tables, end)


def range_snapshots(
    tables: dict[str, pa.Table],
    lo: int,
    hi: int,
    end: pd.Timestamp,
    chunk_customers: int = CHUNK_CUSTOMERS,
) -> Iterator[pa.Table]:
    """Snapshot rows of customers lo..hi-1, prepared as a range (`prepare_range`), a chunk
    of customers at a time."""
    prepared = prepare_range(tables, lo, hi, end)
    for first, last in spans(prepared.customers.num_rows, chunk_customers):
        yield snapshots(prepared, first, last)


def prepare(tables: dict[str, pa.Table], end: pd.Timestamp | None = None) -> Prepared:
    """Every customer event of the raw tables, sorted by customer (see `snapshots`)."""
    customers = tables["customers"]
    lookup = customers.column("customer_id").combine_chunks()
    orders = frame(tables, "orders", ["order_id", "order_ts", "amount"])
    orders["code"] = codes_in(tables["orders"].column("customer_id"), lookup)
    order_lookup = tables["orders"].column("order_id").combine_chunks()

    def via_order(table: str) -> np.ndarray:
        position = codes_in(tables[table].column("order_id"), order_lookup)
        return np.where(position >= 0, orders["code"].to_numpy()[np.maximum(position, 0)], -1)

    kinds: list[tuple[Events, tuple[int, ...]]] = []
    order_us = us(orders["order_ts"])
    next_order_us = next_order_instants(orders["code"].to_numpy(), order_us)
    experience: list[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []

    def about_order(table: str, ts: np.ndarray, **values: np.ndarray) -> None:
        """Experience events of the orders named by `table` (see `last_order_events`)."""
        position = codes_in(tables[table].column("order_id"), order_lookup)
        experience.append((via_order(table), ts, position, values))

    order_ev = Events.of(orders["code"], order_us, amount=orders["amount"])
    kinds.append((order_ev, (365,)))

    outcome_ev = None
    shipments = frame(tables, "shipments", ["order_id", "promised_ts", "delivered_ts"])
    if shipments is not None:
        known, late = late_outcomes(shipments)
        outcome_ev = Events.of(via_order("shipments"), known, late=late)
        kinds.append((outcome_ev, (90,)))
        promised, delivered = us(shipments["promised_ts"]), us(shipments["delivered_ts"])
        about_order("shipments", known, outcome_known=np.ones(len(known), bool), late=late)
        about_order(
            "shipments",
            delivered,
            delivered=np.ones(len(delivered), bool),
            days_late=np.maximum(delivered - promised, 0) / US_PER_DAY,
        )

    contact_ev = None
    contacts = frame(tables, "contacts", CONTACT_COLUMNS)
    if contacts is not None:
        contact_ev = Events.of(
            codes_in(tables["contacts"].column("customer_id"), lookup),
            us(contacts["ts"]),
            reason=contacts["reason"].to_numpy(dtype=object),
            # Tables written before ingest inferred reasons have given reasons only.
            inferred=(
                contacts["reason_inferred"].to_numpy(dtype=bool)
                if "reason_inferred" in contacts
                else np.zeros(len(contacts), dtype=bool)
            ),
            resolved=contacts["resolved_first_contact"].to_numpy(dtype=bool),
            csat=contacts["csat"].to_numpy(dtype=np.float64, na_value=np.nan),
            ces=contacts["ces"].to_numpy(dtype=np.float64, na_value=np.nan),
            nps=contacts["nps"].to_numpy(dtype=np.float64, na_value=np.nan),
            wait_s=contacts["wait_s"].to_numpy(dtype=np.float64),
            transfers=contacts["transfers"].to_numpy(dtype=np.int64),
            ai=(contacts["handled_by"] == "ai_agent").to_numpy(dtype=bool),
        )
        kinds.append((contact_ev, CONTACT_WINDOWS_DAYS))
        if "order_id" in contacts:
            reason = contacts["reason"].to_numpy(dtype=object)
            about_order(
                "contacts",
                us(contacts["ts"]),
                contacts=np.ones(len(contacts), bool),
                unresolved=~contacts["resolved_first_contact"].to_numpy(dtype=bool),
                complaint=reason == "complaint",
                billing_dispute=reason == "billing_dispute",
                damaged_item=reason == "damaged_item",
                high_effort=contacts["ces"].to_numpy(dtype=np.float64, na_value=np.nan)
                >= HIGH_EFFORT_CES,
            )

    request_ev = refund_ev = None
    returns = frame(tables, "returns", ["order_id", "requested_ts", "refunded_ts"])
    if returns is not None:
        code = via_order("returns")
        requested, refunded = us(returns["requested_ts"]), us(returns["refunded_ts"])
        request_ev = Events.of(code, requested)
        refund_ev = Events.of(code, refunded, lag_days=(refunded - requested) / US_PER_DAY)
        kinds += [(request_ev, ()), (refund_ev, ())]
        about_order("returns", requested, returns=np.ones(len(requested), bool))
        # A refund still missing that long after the request is as bad as a slow one.
        slow = is_missing_us(refunded) | (refunded - requested > LONG_REFUND_DAYS * US_PER_DAY)
        slow_known = np.where(
            is_missing_us(refunded),
            requested + int(LONG_REFUND_DAYS * US_PER_DAY),
            np.minimum(refunded, requested + int(LONG_REFUND_DAYS * US_PER_DAY)),
        )
        about_order("returns", slow_known, long_refund=slow)

    shown_ev = accepted_ev = None
    offers = frame(tables, "offers", ["ts", "offer_type", "accepted_ts"])
    if offers is not None:
        shown = (offers["offer_type"] != "none").to_numpy()
        code = codes_in(tables["offers"].column("customer_id"), lookup)
        code = np.where(shown, code, -1)
        shown_ev = Events.of(code, us(offers["ts"]))
        accepted_ev = Events.of(code, us(offers["accepted_ts"]))
        kinds += [(shown_ev, (90,)), (accepted_ev, ())]

    overdue_ev = settled_ev = None
    invoices = frame(tables, "invoices", ["due_date", "paid_ts"])
    if invoices is not None:
        code = codes_in(tables["invoices"].column("customer_id"), lookup)
        due, paid = us(invoices["due_date"]), us(invoices["paid_ts"])
        # An invoice becomes overdue at its due date if it is unpaid then; it stops being
        # open when it is paid.
        late_paid = is_missing_us(paid) | (paid > due)
        overdue_ev = Events.of(np.where(late_paid, code, -1), due)
        settled = late_paid & ~is_missing_us(paid)
        settled_ev = Events.of(np.where(settled, code, -1), paid)
        kinds += [(overdue_ev, ()), (settled_ev, ())]

    end_s = int(pd.Timestamp(data_end(tables) if end is None else end).value // 1000 // US_PER_S)
    last_enter, last_exit = last_order_events(experience, next_order_us)
    named = {
        "order": (order_ev, (365,)),
        "last_order_enter": (last_enter, ()),
        "last_order_exit": (last_exit, ()),
        "outcome": (outcome_ev, (90,)),
        "contact": (contact_ev, CONTACT_WINDOWS_DAYS),
        "request": (request_ev, ()),
        "refund": (refund_ev, ()),
        "shown": (shown_ev, (90,)),
        "accepted": (accepted_ev, ()),
        "overdue": (overdue_ev, ()),
        "settled": (settled_ev, ()),
    }
    sorted_kinds = {
        k: (None if e is None else e.sorted_by_entity(), w) for k, (e, w) in named.items()
    }
    return Prepared(customers, sorted_kinds, end_s)


def data_end(tables: dict[str, pa.Table]) -> pd.Timestamp:
    """The UTC midnight after the latest event `prepare` makes of validated `tables` (an
    order, a parcel's lateness becoming known, a contact, a return's request or refund, an
    offer shown or accepted, an invoice falling overdue or settled late): where snapshots
    end by default. It reads only the instant columns, so that a build prepared a range of
    customers at a time can end where the whole business ends.

    Raises:
        ValueError: The tables hold no event.
    """
    found: list[np.ndarray] = [us(tables["orders"].column("order_ts"))]
    if "shipments" in tables:
        found.append(late_outcomes(tables["shipments"])[0])
    if "contacts" in tables:
        found.append(us(tables["contacts"].column("ts")))
    if "returns" in tables:
        found += [us(tables["returns"].column(c)) for c in ("requested_ts", "refunded_ts")]
    if "offers" in tables:
        offers = tables["offers"]
        shown = np.asarray(pc.not_equal(offers.column("offer_type"), "none").fill_null(True))
        found += [us(offers.column(c))[shown] for c in ("ts", "accepted_ts")]
    if "invoices" in tables:
        due = us(tables["invoices"].column("due_date"))
        paid = us(tables["invoices"].column("paid_ts"))
        late_paid = is_missing_us(paid) | (paid > due)
        found += [due[late_paid], paid[late_paid & ~is_missing_us(paid)]]
    latest = max((int(v.max()) for v in found if len(v)), default=None)
    if latest is None or latest == np.iinfo(np.int64).min:
        raise ValueError("the tables hold no customer event")
    return pd.Timestamp(int(next_midnight_us(np.array([latest]))[0]), unit="us", tz="UTC")


def next_order_instants(code: np.ndarray, order_us: np.ndarray) -> np.ndarray:
    """The instant (µs) of each order's customer's next order; int64 max for the latest."""
    order = np.lexsort((order_us, code))
    after = np.full(len(code), np.iinfo(np.int64).max, dtype=np.int64)
    same = code[order][1:] == code[order][:-1]
    after[order[:-1][same]] = order_us[order][1:][same]
    return after


def last_order_events(
    experience: list[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]],
    next_order_us: np.ndarray,
) -> tuple[Events, Events]:
    """What happened to each order, counted only while it is the customer's latest.

    An event about an order (its parcel known late, a contact, a refund) enters at its own
    instant and leaves when the customer orders again; an event after the next order never
    counts. The latest order's experience as of a row is then the total of the entering
    events less the total of the leaving ones.

    Args:
        experience: (customer code, instant µs, position of the order in `orders` or -1,
            values) per source table; values are named from `LAST_ORDER_VALUES`.
        next_order_us: The next order's instant per order (see `next_order_instants`).

    Returns:
        The entering events and the leaving events, with one column per `LAST_ORDER_VALUES`.
    """
    codes, instants, leaves, columns = [], [], [], {name: [] for name in LAST_ORDER_VALUES}
    for code, ts, position, values in experience:
        ts = np.asarray(ts, dtype=np.int64)
        following = np.where(position >= 0, next_order_us[np.maximum(position, 0)], -1)
        counted = (position >= 0) & ~is_missing_us(ts) & (ts < following)
        codes.append(np.where(counted, code, -1))
        instants.append(ts)
        leaves.append(following)
        for name in LAST_ORDER_VALUES:
            value = values.get(name, np.zeros(len(ts)))
            columns[name].append(np.asarray(value, dtype=np.float64))
    if not codes:
        empty = {name: np.zeros(0) for name in LAST_ORDER_VALUES}
        return Events.of(np.zeros(0), np.zeros(0), **empty), Events.of(
            np.zeros(0), np.zeros(0), **empty
        )
    code, ts, leave = np.concatenate(codes), np.concatenate(instants), np.concatenate(leaves)
    values = {name: np.nan_to_num(np.concatenate(parts)) for name, parts in columns.items()}
    left = (code >= 0) & (leave < np.iinfo(np.int64).max)
    return Events.of(code, ts, **values), Events.of(np.where(left, code, -1), leave, **values)


def snapshots(
    prepared: Prepared,
    lo: int,
    hi: int,
    extra_rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> pa.Table:
    """Snapshot rows of customers lo..hi-1 (positions in the customers table).

    `extra_rows` (customer position, second) asks for rows at further instants as well, each
    holding what its customer's newest row at or before it holds (a restated row, see
    `features.build.increment`).
    """
    customers = prepared.customers.slice(lo, hi - lo)
    ev = {k: (None if e is None else e.within(lo, hi)) for k, (e, _) in prepared.kinds.items()}
    order_ev, outcome_ev, contact_ev = ev["order"], ev["outcome"], ev["contact"]
    request_ev, refund_ev, shown_ev = ev["request"], ev["refund"], ev["shown"]
    accepted_ev, overdue_ev, settled_ev = ev["accepted"], ev["overdue"], ev["settled"]
    kinds = [(ev[k], w) for k, (e, w) in prepared.kinds.items() if e is not None]
    signup = us(customers.column("signup_ts").to_pandas())
    signup_ev = Events.of(np.arange(customers.num_rows), signup)
    first_rows = [(signup_ev.entity, signup_ev.seen_s())]
    if extra_rows is not None:
        entity, second = (np.asarray(a, dtype=np.int64) for a in extra_rows)
        inside = (entity >= lo) & (entity < hi)
        first_rows.append((entity[inside] - lo, second[inside]))
    grid = SnapshotGrid.build(first_rows, kinds, prepared.end_s)
    code = grid.entity

    rows = pa.array(code)
    out: dict[str, np.ndarray | pa.ChunkedArray] = {
        "customer_id": customers.column("customer_id").take(rows),
        "event_ts": grid.ts_us,
        "signup_epoch": epoch_s(signup)[code],
    }
    for column in STATIC_COLUMNS:
        out[column] = customers.column(column).take(rows)

    amount = order_ev.values["amount"]
    out["orders_total"] = grid.count(order_ev)
    out["orders_365d"] = grid.count(order_ev, 365)
    out["monetary_total"] = grid.total(order_ev, amount)
    out["monetary_365d"] = grid.total(order_ev, amount, 365)
    out["first_order_epoch"] = grid.first(order_ev, order_ev.ts / US_PER_S)
    out["last_order_epoch"] = grid.last(order_ev, order_ev.ts / US_PER_S)
    out["last_order_amount"] = grid.last(order_ev, amount)
    enter, leave = ev["last_order_enter"], ev["last_order_exit"]
    for name in LAST_ORDER_VALUES:
        # Counts are summed exactly as integers; days late as floats.
        kind = np.float64 if name == "days_late" else np.int64
        entered = grid.total(enter, enter.values[name].astype(kind))
        out[f"last_order_{name}"] = entered - grid.total(leave, leave.values[name].astype(kind))
    # The latest instant of the latest order's experience: its clock to the next order
    # starts once the parcel, the contacts and the refund are behind the customer.
    out["last_experience_epoch"] = np.fmax(
        out["last_order_epoch"], grid.last(enter, enter.ts / US_PER_S)
    )

    if outcome_ev is not None:
        late = outcome_ev.values["late"]
        out["deliveries_total"] = grid.count(outcome_ev)
        out["late_deliveries_total"] = grid.total(outcome_ev, late)
        out["late_deliveries_90d"] = grid.total(outcome_ev, late, 90)

    if contact_ev is not None:
        v = contact_ev.values
        n = grid.count(contact_ev)
        out["contacts_total"] = n
        for reason in CONTACT_REASONS:
            is_reason = v["reason"] == reason
            for days in CONTACT_WINDOWS_DAYS:
                out[f"contacts_{reason}_{days}d"] = grid.total(contact_ev, is_reason, days)
        for days in CONTACT_WINDOWS_DAYS:
            out[f"inferred_reason_contacts_{days}d"] = grid.total(contact_ev, v["inferred"], days)
        out["last_contact_reason"] = grid.last(contact_ev, v["reason"], fill=None)
        out["last_contact_epoch"] = grid.last(contact_ev, contact_ev.ts / US_PER_S)
        out["unresolved_contacts_90d"] = grid.total(contact_ev, ~v["resolved"], 90)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["fcr_rate"] = np.where(n > 0, grid.total(contact_ev, v["resolved"]) / n, np.nan)
            for name, label in (
                ("wait_s", "wait_s_mean"),
                ("transfers", "transfers_mean"),
                ("ai", "ai_share"),
            ):
                out[label] = np.where(n > 0, grid.total(contact_ev, v[name]) / n, np.nan)
            for name in ("csat", "ces", "nps"):
                answered = grid.total(contact_ev, ~np.isnan(v[name]))
                total = grid.total(contact_ev, v[name])
                out[f"{name}_mean"] = np.where(answered > 0, total / answered, np.nan)

    if request_ev is not None:
        requests = grid.count(request_ev)
        refunds = grid.count(refund_ev)
        out["returns_total"] = requests
        out["open_returns"] = requests - refunds
        with np.errstate(invalid="ignore", divide="ignore"):
            lag = grid.total(refund_ev, refund_ev.values["lag_days"])
            out["refund_lag_days_mean"] = np.where(refunds > 0, lag / refunds, np.nan)

    if shown_ev is not None:
        out["offers_received_total"] = grid.count(shown_ev)
        out["offers_received_90d"] = grid.count(shown_ev, 90)
        out["offers_accepted_total"] = grid.count(accepted_ev)

    if overdue_ev is not None:
        overdue = grid.count(overdue_ev)
        out["invoices_overdue_total"] = overdue
        out["invoices_overdue_open"] = overdue - grid.count(settled_ev)

    return to_table(out)
