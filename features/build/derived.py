"""Features that move with the clock, derived at decision time from stored instants.

Stored views hold instants (`*_epoch`, seconds); "how long since" depends on when the
question is asked. The same function serves training (the label event's time) and serving
(now), so both see identical definitions.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400.0
SECONDS_PER_HOUR = 3_600.0

# derived name → (stored instant, unit in seconds)
SINCE = {
    "tenure_days": ("signup_epoch", SECONDS_PER_DAY),
    "days_since_first_order": ("first_order_epoch", SECONDS_PER_DAY),
    "days_since_last_order": ("last_order_epoch", SECONDS_PER_DAY),
    "days_since_last_contact": ("last_contact_epoch", SECONDS_PER_DAY),
    "days_since_last_experience": ("last_experience_epoch", SECONDS_PER_DAY),
    "hours_in_transit": ("shipped_epoch", SECONDS_PER_HOUR),
    "hours_since_last_scan": ("last_scan_epoch", SECONDS_PER_HOUR),
    "days_since_category_purchase": ("category_last_purchase_epoch", SECONDS_PER_DAY),
}
UNTIL = {"hours_to_promise": ("promised_epoch", SECONDS_PER_HOUR)}
# A new customer's rate is measured over at least this many days (one early order is not a
# rate of one a day), and the trailing-year rate over at most a year.
MIN_RATE_DAYS = 30.0
YEAR_DAYS = 365.0
# A gamma prior on a customer's ordering rate, as if every customer had already shown
# PRIOR_ORDERS orders over PRIOR_DAYS (a rate of one in 75 days): a new customer's rate is
# then pulled towards the common one, a long history's is its own. After each order's
# experience a customer leaves for good with CHURN_PER_ORDER; REPURCHASE_DAYS is the window
# the estimate looks ahead (churn's label).
PRIOR_ORDERS = 2.0
PRIOR_DAYS = 150.0
CHURN_PER_ORDER = 0.3
REPURCHASE_DAYS = 90.0


def as_of_seconds(as_of: pd.Series | pd.Timestamp, n: int) -> np.ndarray:
    """Decision instants as epoch seconds, broadcast to n rows."""
    if isinstance(as_of, pd.Series):
        values = pd.to_datetime(as_of, utc=True).to_numpy(dtype="datetime64[us]")
        return values.astype(np.int64) / 1e6
    return np.full(n, pd.Timestamp(as_of).timestamp())


def repurchase_estimate(
    orders: np.ndarray,
    days_since_first: np.ndarray,
    days_since_last: np.ndarray,
    days_since_experience: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """How likely a customer still buys, and buys within `REPURCHASE_DAYS`, from their order
    history alone.

    The ordering rate has a gamma prior (`PRIOR_ORDERS` over `PRIOR_DAYS`) updated by the
    orders after the first over the span from the first order to the latest; the silence
    since the latest order's experience settled is then weighed against that rate: a
    customer who left after it (chance `CHURN_PER_ORDER`) explains a long silence better than
    a slow one who stayed. Missing before a first order.

    Args:
        orders: Orders so far.
        days_since_first: Days since the first order.
        days_since_last: Days since the latest order.
        days_since_experience: Days since the latest order's experience settled.

    Returns:
        The probability that the customer is still buying, and that they order within the
        next `REPURCHASE_DAYS`.
    """
    shape = PRIOR_ORDERS + orders - 1.0
    scale = PRIOR_DAYS + np.maximum(days_since_first - days_since_last, 0.0)
    silence = np.maximum(days_since_experience, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # E[e^{-rate × silence}] under the rate's gamma posterior.
        quiet = (scale / (scale + silence)) ** shape
        stays = (1.0 - CHURN_PER_ORDER) * quiet
        alive = stays / (stays + CHURN_PER_ORDER)
        buys = 1.0 - ((scale + silence) / (scale + silence + REPURCHASE_DAYS)) ** shape
        missing = ~(orders > 0)
    return np.where(missing, np.nan, alive), np.where(missing, np.nan, alive * buys)


def add_time_features(
    frame: pd.DataFrame, as_of: pd.Series | pd.Timestamp, copy: bool = True
) -> pd.DataFrame:
    """Add every derivable time feature whose stored instant is present.

    Args:
        frame: Retrieved features (one row per decision).
        as_of: The decision instant of each row, or one instant for all.
        copy: False: add the columns to `frame` itself, a frame the caller owns (training's
            just retrieved million rows are then not held twice).

    Returns:
        `frame`, or a copy of it, with the derived columns added.
    """
    out = frame.copy() if copy else frame
    now = as_of_seconds(as_of, len(frame))
    for name, (source, unit) in SINCE.items():
        if source in out:
            out[name] = (now - out[source].to_numpy(dtype=np.float64)) / unit
    for name, (source, unit) in UNTIL.items():
        if source in out:
            out[name] = (out[source].to_numpy(dtype=np.float64) - now) / unit
    if "hours_to_promise" in out:
        out["past_promise"] = (out["hours_to_promise"] < 0).astype(np.float64)
    if "category_spend_total" in out and "monetary_total" in out:
        with np.errstate(invalid="ignore", divide="ignore"):
            out["category_spend_share"] = np.where(
                out["monetary_total"] > 0, out["category_spend_total"] / out["monetary_total"], 0.0
            )
    if "orders_total" in out and "days_since_first_order" in out:
        # How often the customer orders, and how many orders that rate says the silence
        # since the last one has missed: a long gap means more for a frequent buyer.
        active = np.maximum(out["days_since_first_order"].to_numpy(np.float64), MIN_RATE_DAYS)
        active = np.where(np.isnan(active), MIN_RATE_DAYS, active)
        rate = out["orders_total"].to_numpy(np.float64) / active
        out["orders_per_day"] = rate
        out["expected_orders_missed"] = rate * out["days_since_last_order"].to_numpy(np.float64)
        # A buy-till-you-die reading of the history (Pareto/NBD with a churn chance per
        # order): how likely the customer still buys, and buys within the next 90 days.
        alive, repurchase = repurchase_estimate(
            out["orders_total"].to_numpy(np.float64),
            out["days_since_first_order"].to_numpy(np.float64),
            out["days_since_last_order"].to_numpy(np.float64),
            out["days_since_last_experience"].to_numpy(np.float64)
            if "days_since_last_experience" in out
            else out["days_since_last_order"].to_numpy(np.float64),
        )
        out["p_alive_estimate"] = alive
        out["p_repurchase_90d_estimate"] = repurchase
        if "orders_365d" in out:
            out["orders_per_day_365d"] = out["orders_365d"].to_numpy(np.float64) / np.minimum(
                active, YEAR_DAYS
            )
        # The silence against the customer's own rhythm: days since the last order over the
        # mean gap between their orders (missing before a second order).
        orders = out["orders_total"].to_numpy(np.float64)
        span = out["days_since_first_order"].to_numpy(np.float64) - out[
            "days_since_last_order"
        ].to_numpy(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.where(orders > 1, span / (orders - 1), np.nan)
            out["silence_over_gap"] = np.where(
                gap > 0, out["days_since_last_order"].to_numpy(np.float64) / gap, np.nan
            )
    out["decision_month"] = pd.to_datetime(now, unit="s", utc=True).month.to_numpy(np.float64)
    return out


def derive_record(record: dict, now_s: float) -> dict:
    """`add_time_features` for one row given as a dict, without pandas: the per-request
    path of serving (a test holds the two equal). Missing values are None or NaN."""

    def number(name: str) -> float:
        value = out.get(name)
        return math.nan if value is None else float(value)

    out = dict(record)
    for name, (source, unit) in SINCE.items():
        if source in record:
            out[name] = (now_s - number(source)) / unit
    for name, (source, unit) in UNTIL.items():
        if source in record:
            out[name] = (number(source) - now_s) / unit
    if "hours_to_promise" in out:
        out["past_promise"] = float(out["hours_to_promise"] < 0)
    if "category_spend_total" in out and "monetary_total" in out:
        total = number("monetary_total")
        out["category_spend_share"] = number("category_spend_total") / total if total > 0 else 0.0
    if "orders_total" in out and "days_since_first_order" in out:
        active = number("days_since_first_order")
        active = MIN_RATE_DAYS if math.isnan(active) else max(active, MIN_RATE_DAYS)
        rate = number("orders_total") / active
        out["orders_per_day"] = rate
        out["expected_orders_missed"] = rate * number("days_since_last_order")
        alive, repurchase = repurchase_estimate(
            np.array([number("orders_total")]),
            np.array([number("days_since_first_order")]),
            np.array([number("days_since_last_order")]),
            np.array(
                [
                    number("days_since_last_experience")
                    if "days_since_last_experience" in out
                    else number("days_since_last_order")
                ]
            ),
        )
        out["p_alive_estimate"] = float(alive[0])
        out["p_repurchase_90d_estimate"] = float(repurchase[0])
        if "orders_365d" in out:
            out["orders_per_day_365d"] = number("orders_365d") / min(active, YEAR_DAYS)
        orders = number("orders_total")
        span = number("days_since_first_order") - number("days_since_last_order")
        gap = span / (orders - 1) if orders > 1 else math.nan
        out["silence_over_gap"] = number("days_since_last_order") / gap if gap > 0 else math.nan
    out["decision_month"] = float(datetime.fromtimestamp(now_s, tz=UTC).month)
    return out
