"""Measuring date windows: the outcome's local-day bounds and date-level metrics.

The window model itself (quantile boosters, conformal offsets, local dates) is
`models.served.window`; this is what training needs besides it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.instants import utc_series
from models.served.window import HOUR, day_starts, local_dates


def outcome_bucket(
    as_of, event, timezone: str | Sequence[str] | pd.Series | None
) -> tuple[np.ndarray, np.ndarray]:
    """Log hours from each decision to the start and to the end of its event's local day.

    The bounds [y_low, y_high) of `training.conformal.window_scores` for a date-level
    window. A missing event (never observed) gives y_low = +inf; an event day that began
    before the decision gives y_low = −inf.
    """
    start_at = utc_series(as_of)
    dates = local_dates(event, timezone)
    starts = day_starts(dates, timezone)
    ends = day_starts(dates + np.timedelta64(1, "D"), timezone)
    with np.errstate(divide="ignore", invalid="ignore"):
        low_h = ((starts - start_at) / HOUR).to_numpy(dtype=np.float64)
        high_h = ((ends - start_at) / HOUR).to_numpy(dtype=np.float64)
        y_low = np.where(low_h > 0, np.log(np.maximum(low_h, 1e-12)), -np.inf)
        y_high = np.log(np.maximum(high_h, 1e-9))
    missing = np.isnat(dates)
    return np.where(missing, np.inf, y_low), np.where(missing, np.inf, y_high)


def window_metrics(
    actual: np.ndarray,
    most_likely: np.ndarray,
    earliest: np.ndarray,
    latest: np.ndarray,
) -> dict[str, float]:
    """Date-level measures of a point estimate and a window.

    Args:
        actual: Event dates (`datetime64[D]`; NaT for an event never observed, e.g. a lost
            parcel: it counts as outside every window and is left out of the errors).
        most_likely: Estimated dates.
        earliest: First dates of the windows.
        latest: Last dates of the windows.

    Returns:
        rows, observed (rows with an event), mae_days, bias_days (estimate − actual),
        exact_share, within_1d_share, coverage, median_width_days (latest − earliest).
    """
    actual = np.asarray(actual, dtype="datetime64[D]")
    seen = ~np.isnat(actual)
    day = np.timedelta64(1, "D")
    error = (np.asarray(most_likely, dtype="datetime64[D]")[seen] - actual[seen]) / day
    inside = (np.asarray(earliest, dtype="datetime64[D]") <= actual) & (
        actual <= np.asarray(latest, dtype="datetime64[D]")
    )
    width = np.asarray(latest, dtype="datetime64[D]") - np.asarray(earliest, "datetime64[D]")
    n = len(actual)
    nan = float("nan")
    return {
        "rows": float(n),
        "observed": float(seen.sum()),
        "mae_days": float(np.mean(np.abs(error))) if seen.any() else nan,
        "bias_days": float(np.mean(error)) if seen.any() else nan,
        "exact_share": float(np.mean(error == 0)) if seen.any() else nan,
        "within_1d_share": float(np.mean(np.abs(error) <= 1)) if seen.any() else nan,
        "coverage": float(np.mean(inside & seen)) if n else nan,
        "median_width_days": float(np.median(width / day)) if n else nan,
    }
