"""Features that move with the clock, derived at decision time from stored instants.

Stored views hold instants (`*_epoch`, seconds); "how long since" depends on when the
question is asked. The same function serves training (the label event's time) and serving
(now), so both see identical definitions.
"""

from __future__ import annotations

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
    "hours_in_transit": ("shipped_epoch", SECONDS_PER_HOUR),
    "hours_since_last_scan": ("last_scan_epoch", SECONDS_PER_HOUR),
    "days_since_category_purchase": ("category_last_purchase_epoch", SECONDS_PER_DAY),
}
UNTIL = {"hours_to_promise": ("promised_epoch", SECONDS_PER_HOUR)}


def as_of_seconds(as_of: pd.Series | pd.Timestamp, n: int) -> np.ndarray:
    """Decision instants as epoch seconds, broadcast to n rows."""
    if isinstance(as_of, pd.Series):
        values = pd.to_datetime(as_of, utc=True).to_numpy(dtype="datetime64[us]")
        return values.astype(np.int64) / 1e6
    return np.full(n, pd.Timestamp(as_of).timestamp())


def add_time_features(frame: pd.DataFrame, as_of: pd.Series | pd.Timestamp) -> pd.DataFrame:
    """Add every derivable time feature whose stored instant is present.

    Args:
        frame: Retrieved features (one row per decision).
        as_of: The decision instant of each row, or one instant for all.

    Returns:
        A copy of `frame` with the derived columns added.
    """
    out = frame.copy()
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
    return out
