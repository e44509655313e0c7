"""Customer outcomes after service: repeat purchase, churn by contact reason, and the
revenue of customers whose first order went smoothly against those whose did not.

Every outcome is measured over a fixed window after its starting instant and counted only
when that window ended by the data's end; otherwise recent rows would look like churn only
because their future has not happened yet. The figures are associations, not effects:
customers who contact service differ from those who do not in more than the contact.
"""

from __future__ import annotations

import pandas as pd

from features.build.shipments import late_outcomes
from features.report.contact_centre import ALL

REPEAT_DAYS = 90
CHURN_DAYS = 90
COHORT_DAYS = 365
CONTACTED = "contacted service"
NOT_CONTACTED = "no contact"
SMOOTH = "smooth first order"
FRICTION = "friction on first order"


def next_order_ts(customer_ids: pd.Series, instants: pd.Series, orders: pd.DataFrame) -> pd.Series:
    """For each (customer, instant), the customer's first order strictly after the instant.

    Args:
        customer_ids: Customers, one per query.
        instants: Query instants, aligned with `customer_ids`.
        orders: Raw orders (customer_id, order_ts).

    Returns:
        The next order's instant per query (NaT when none), aligned with the queries.
    """
    queries = pd.DataFrame(
        {
            "customer_id": customer_ids.to_numpy(),
            "ts": _instants(instants),
            "query": range(len(customer_ids)),
        }
    ).sort_values("ts", kind="stable")
    stamps = _instants(orders["order_ts"])
    later = pd.DataFrame(
        {"customer_id": orders["customer_id"].to_numpy(), "ts": stamps, "next_order_ts": stamps}
    ).sort_values("ts", kind="stable")
    matched = pd.merge_asof(
        queries,
        later,
        on="ts",
        by="customer_id",
        direction="forward",
        allow_exact_matches=False,
    )
    return matched.sort_values("query")["next_order_ts"].set_axis(customer_ids.index)


def _instants(values: pd.Series) -> pd.Series:
    """Instants in one resolution and zone, so that arrays from different tables compare."""
    return pd.Series(pd.to_datetime(values.to_numpy(), utc=True)).dt.as_unit("us")


def _window(starts: pd.Series, days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The first start and the last window end of a set of windows."""
    if starts.empty:
        return pd.NaT, pd.NaT
    return starts.min(), starts.max() + pd.Timedelta(days=days)


def repeat_purchase(
    orders: pd.DataFrame,
    contacts: pd.DataFrame,
    data_end: pd.Timestamp,
    days: int = REPEAT_DAYS,
) -> pd.DataFrame:
    """The repeat-purchase rate of orders followed by a contact against those that were not.

    An order counts when its `days`-day window ended by the data's end. It repeats when the
    same customer placed another order within `days` days after it. It is contacted when
    the customer contacted service about that order, or contacted service without naming an
    order within those days (such a contact cannot be placed on any other order).

    Args:
        orders: Raw orders.
        contacts: Raw contacts (customer_id, order_id, ts); may be empty.
        data_end: The data's end.
        days: Length of the window after each order.

    Returns:
        Rows `contacted service`, `no contact` and `all` (column `group`) with orders,
        customers, repeat_rate, first_ts (first order counted) and last_ts (last window
        end).
    """
    span = pd.Timedelta(days=days)
    placed = orders.assign(order_ts=pd.to_datetime(orders["order_ts"], utc=True))
    placed = placed[placed["order_ts"] + span <= data_end].reset_index(drop=True)
    next_ts = next_order_ts(placed["customer_id"], placed["order_ts"], orders)
    placed["repeated"] = (next_ts - placed["order_ts"] <= span).fillna(False).astype(bool)
    about_order = set(contacts["order_id"].dropna())
    unnamed = contacts[contacts["order_id"].isna()][["customer_id", "ts"]]
    pairs = placed[["order_id", "customer_id", "order_ts"]].merge(unnamed, on="customer_id")
    contact_ts = pd.to_datetime(pairs["ts"], utc=True)
    inside = (contact_ts >= pairs["order_ts"]) & (contact_ts <= pairs["order_ts"] + span)
    after_unnamed = set(pairs.loc[inside, "order_id"])
    placed["contacted"] = placed["order_id"].isin(about_order | after_unnamed)
    groups = [
        (CONTACTED, placed[placed["contacted"]]),
        (NOT_CONTACTED, placed[~placed["contacted"]]),
        (ALL, placed),
    ]
    rows = []
    for name, group in groups:
        first_ts, last_ts = _window(group["order_ts"], days)
        rows.append(
            {
                "group": name,
                "orders": len(group),
                "customers": group["customer_id"].nunique(),
                "repeat_rate": float(group["repeated"].mean()) if len(group) else float("nan"),
                "first_ts": first_ts,
                "last_ts": last_ts,
            }
        )
    return pd.DataFrame(rows)


def churn_by_reason(
    orders: pd.DataFrame,
    contacts: pd.DataFrame,
    data_end: pd.Timestamp,
    days: int = CHURN_DAYS,
) -> pd.DataFrame:
    """The share of contacts of each reason after which the customer placed no order.

    A contact counts when its `days`-day window ended by the data's end; it is followed by
    churn when the customer placed no order within `days` days after it.

    Args:
        orders: Raw orders.
        contacts: Raw contacts (customer_id, ts, reason); may be empty.
        data_end: The data's end.
        days: Length of the window after each contact.

    Returns:
        One row per reason, sorted, then `all`, with contacts, customers, churn_rate,
        first_ts (first contact counted) and last_ts (last window end).
    """
    span = pd.Timedelta(days=days)
    counted = contacts.assign(ts=pd.to_datetime(contacts["ts"], utc=True))
    counted = counted[counted["ts"] + span <= data_end].reset_index(drop=True)
    next_ts = next_order_ts(counted["customer_id"], counted["ts"], orders)
    counted["churned"] = ~(next_ts - counted["ts"] <= span).fillna(False).astype(bool)
    groups = [*counted.groupby("reason", sort=True)]
    if not counted.empty:
        groups.append((ALL, counted))
    rows = []
    for name, group in groups:
        first_ts, last_ts = _window(group["ts"], days)
        rows.append(
            {
                "reason": name,
                "contacts": len(group),
                "customers": group["customer_id"].nunique(),
                "churn_rate": float(group["churned"].mean()),
                "first_ts": first_ts,
                "last_ts": last_ts,
            }
        )
    columns = ["reason", "contacts", "customers", "churn_rate", "first_ts", "last_ts"]
    return pd.DataFrame(rows, columns=columns)


def first_order_cohorts(
    orders: pd.DataFrame,
    shipments: pd.DataFrame,
    contacts: pd.DataFrame,
    data_end: pd.Timestamp,
    days: int = COHORT_DAYS,
) -> pd.DataFrame:
    """Revenue after a smooth first order against a first order with friction.

    A customer counts when the `days` days after their first order ended by the data's
    end. Their first order had friction when one of its parcels was late (delivered after
    its promise, or undelivered once the promise passed), or a contact about it within
    those days was transferred or not resolved at first contact. Revenue is the amount of
    the customer's later orders within those days (the first order itself left out, as it
    is the same whatever happened next); refunds are not deducted.

    Args:
        orders: Raw orders.
        shipments: Raw shipments (order_id, promised_ts, delivered_ts); may be empty.
        contacts: Raw contacts (order_id, ts, transfers, resolved_first_contact); may be
            empty.
        data_end: The data's end.
        days: Length of the window after each first order.

    Returns:
        Rows `smooth first order`, `friction on first order` and `all` (column `cohort`)
        with customers, mean_revenue, repeat_rate (share with a later order in the window),
        late_delivery, transferred and unresolved (customers with each kind of friction),
        first_ts (first first order counted) and last_ts (last window end).
    """
    span = pd.Timedelta(days=days)
    placed = orders.assign(order_ts=pd.to_datetime(orders["order_ts"], utc=True))
    first = placed.sort_values(["order_ts", "order_id"]).drop_duplicates("customer_id")
    first = first[first["order_ts"] + span <= data_end].reset_index(drop=True)
    late_orders: set[str] = set()
    if not shipments.empty:
        known, late = late_outcomes(shipments)
        decided = known <= data_end.value // 1000
        late_orders = set(shipments.loc[late & decided, "order_id"])
    about = contacts[contacts["order_id"].isin(first["order_id"])]
    about = about.merge(first[["order_id", "order_ts"]], on="order_id")
    about = about[pd.to_datetime(about["ts"], utc=True) <= about["order_ts"] + span]
    transferred = set(about.loc[about["transfers"] > 0, "order_id"])
    unresolved = set(about.loc[~about["resolved_first_contact"].astype(bool), "order_id"])
    first["late_delivery"] = first["order_id"].isin(late_orders)
    first["transferred"] = first["order_id"].isin(transferred)
    first["unresolved"] = first["order_id"].isin(unresolved)
    first["friction"] = first["late_delivery"] | first["transferred"] | first["unresolved"]
    later = placed.merge(first[["customer_id", "order_ts"]], on="customer_id", suffixes=("", "_0"))
    later = later[
        (later["order_ts"] > later["order_ts_0"])
        & (later["order_ts"] <= later["order_ts_0"] + span)
    ]
    revenue = later.groupby("customer_id")["amount"].sum()
    first["revenue"] = first["customer_id"].map(revenue).fillna(0.0)
    first["repeated"] = first["customer_id"].isin(later["customer_id"])
    groups = [
        (SMOOTH, first[~first["friction"]]),
        (FRICTION, first[first["friction"]]),
        (ALL, first),
    ]
    rows = []
    for name, group in groups:
        first_ts, last_ts = _window(group["order_ts"], days)
        rows.append(
            {
                "cohort": name,
                "customers": len(group),
                "mean_revenue": float(group["revenue"].mean()) if len(group) else float("nan"),
                "repeat_rate": float(group["repeated"].mean()) if len(group) else float("nan"),
                "late_delivery": int(group["late_delivery"].sum()),
                "transferred": int(group["transferred"].sum()),
                "unresolved": int(group["unresolved"].sum()),
                "first_ts": first_ts,
                "last_ts": last_ts,
            }
        )
    return pd.DataFrame(rows)
