"""Churn by contact reason: will this customer place no order in the next 90 days?

- Entity: customer. Decisions: monthly snapshots, the first of each month at 00:00 UTC, for
  customers with at least one order before it and whose 90-day window ends by the data's
  end (later snapshots have no label yet). A customer who never ordered is outside the
  population: neither the batch nor the service scores them (`has_ordered`).
- Label: 1 when the customer places no order in [t, t + 90 days), from the raw orders.
- Features: the `churn_v1` service (the customer snapshot as of t) plus recency, tenure and
  time since the first order and the last contact, and the order history's own estimate of
  whether the customer still buys (`features.build.derived.repurchase_estimate`), derived
  at t.
- Baseline: a recency/frequency rule, days since the last order / (1 + orders so far).
- Segments: the reason of the customer's latest contact ("(missing)": never contacted),
  with metrics per reason and a churn-rate-by-reason table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.instants import utc_times, watermark
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, Kind, ModelSpec

NAME = "churn"
HORIZON = pd.Timedelta(days=90)
_S = 1_000_000  # µs per second
# Customer code × this + order second: one sortable key per order (seconds < 1e10,
# codes < 9e8).
_KEY_STRIDE = 10**10


def snapshot_instants(first: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """Month starts after `first` whose 90-day window ends by `end`."""
    start = (first + pd.offsets.MonthBegin(1)).normalize()
    months = pd.date_range(start, end - HORIZON, freq="MS", tz="UTC")
    return months[months + HORIZON <= end]


def has_ordered(orders_total) -> np.ndarray:
    """Which customers are in the population the model learnt from and scores: those with an
    order before the decision (their snapshot's `orders_total` above zero; missing: none).

    Args:
        orders_total: The customers' `orders_total` feature values (a column or a list).
    """
    # Missing (NaN) compares false, as a count of zero does.
    return np.asarray(orders_total, dtype=np.float64) > 0


def label_events(tables: dict[str, pa.Table]) -> pd.DataFrame:
    """One row per (customer, month start) with the 90-day churn label.

    Args:
        tables: Raw tables: `orders` (and `customers`, whose timestamps extend the data's end).

    Returns:
        customer_id, event_timestamp, label (1 = no order within 90 days), label_ts (the end
        of the window: only then is a churn label certain).
    """
    orders = tables["orders"].select(["customer_id", "order_ts"]).to_pandas()
    end = watermark({n: tables[n] for n in ("orders", "customers") if n in tables})
    orders["order_ts"] = utc_times(orders["order_ts"])
    if orders.empty:
        return pd.DataFrame(columns=["customer_id", EVENT_TIME, LABEL, LABEL_KNOWN])
    codes, customers = pd.factorize(orders["customer_id"])
    seconds = orders["order_ts"].to_numpy(dtype="datetime64[us]").astype(np.int64) // _S
    keys = np.sort(codes.astype(np.int64) * _KEY_STRIDE + seconds)
    first = pd.Series(seconds).groupby(codes).min().to_numpy()
    frames = []
    for instant in snapshot_instants(orders["order_ts"].min(), end):
        t = int(instant.timestamp())
        eligible = np.flatnonzero(first < t)
        if not len(eligible):
            continue
        base = eligible.astype(np.int64) * _KEY_STRIDE
        window_s = int(HORIZON.total_seconds())
        ordered = np.searchsorted(keys, base + t + window_s) - np.searchsorted(keys, base + t)
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": customers[eligible],
                    EVENT_TIME: instant,
                    LABEL: (ordered == 0).astype(np.int64),
                    LABEL_KNOWN: instant + HORIZON,
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["customer_id", EVENT_TIME, LABEL, LABEL_KNOWN])
    return pd.concat(frames, ignore_index=True)


def baseline(frame: pd.DataFrame) -> np.ndarray:
    """Recency over frequency: long-silent customers with few orders churn most."""
    recency = frame["days_since_last_order"].astype(np.float64)
    orders = frame["orders_total"].astype(np.float64).fillna(0.0)
    return (recency / (1.0 + orders)).fillna(recency.max()).to_numpy()


def churn_by_contact_reason(frame: pd.DataFrame, scored_test: pd.DataFrame) -> dict:
    """Churn rate by the latest contact's reason: all labelled snapshots, and the test
    window's observed rate beside the model's mean prediction; highest rate first, reasons
    of equal rate by name."""
    reason = "last_contact_reason"

    def by_reason(rows: pd.DataFrame) -> pd.DataFrame:
        key = rows[reason].astype("string").fillna("(missing)")
        return rows.groupby(key, sort=True).agg(
            snapshots=(LABEL, "size"),
            customers=("customer_id", "nunique"),
            churn_rate=(LABEL, "mean"),
        )

    table = by_reason(frame).add_prefix("all_")
    test = by_reason(scored_test).add_prefix("test_")
    key = scored_test[reason].astype("string").fillna("(missing)")
    test["test_mean_score"] = scored_test.groupby(key)["score"].mean()
    table = table.join(test, how="outer").rename_axis(reason).reset_index()
    # NumPy's default sort leaves ties in any order once there are more than 16 reasons.
    table = table.sort_values(
        ["all_churn_rate", reason], ascending=[False, True], kind="stable", na_position="last"
    ).reset_index(drop=True)
    return {"churn_by_contact_reason": table}


SPEC = ModelSpec(
    name=NAME,
    kind=Kind.BINARY,
    metric_label="test AUC",
    entity=("customer_id",),
    decision_time="monthly snapshot, first of the month 00:00 UTC",
    raw_tables=("orders", "customers"),
    label_events=label_events,
    feature_service="churn_v1",
    categorical=("region", "timezone", "language", "preferred_channel", "last_contact_reason"),
    # Absolute instants would teach the model the calendar; the derived ages carry them.
    exclude=(
        "signup_epoch",
        "first_order_epoch",
        "last_order_epoch",
        "last_contact_epoch",
        "last_experience_epoch",
    ),
    derived=(
        "tenure_days",
        "days_since_first_order",
        "days_since_last_order",
        "days_since_last_contact",
        "days_since_last_experience",
        "orders_per_day",
        "orders_per_day_365d",
        "expected_orders_missed",
        "p_alive_estimate",
        "p_repurchase_90d_estimate",
        "silence_over_gap",
        "decision_month",
    ),
    baseline=baseline,
    segments=("last_contact_reason",),
    primary_metric="roc_auc",
    # Smaller trees on more rows a leaf, learning slower: on the default simulated business
    # (20,000 customers) test AUC 0.8064 against 0.8053 with 31 leaves of 100 rows at 0.05,
    # and 7 leaves gave the same AUC with a worse calibration error.
    params={"num_leaves": 15, "learning_rate": 0.03, "min_data_in_leaf": 200},
    capacity=0.05,
    baseline_is_probability=False,
    reports=churn_by_contact_reason,
    report_columns=("customer_id", LABEL, "last_contact_reason"),
)
