"""Split-conformal calibration of prediction windows (conformalized quantile regression).

A quantile model's raw window [lo, hi] covers the stated share of outcomes only when the
model is right about the spread; on new data it usually is not (trees shrink the tails, the
world drifts). Conformalized quantile regression (Romano, Patterson and Candès, 2019) fixes
this with one number per group: on a calibration window that the quantile models did not
learn from, each row gets a conformity score — how far the window must be widened (positive)
or may be narrowed (negative) to hold its outcome — and the windows of new rows are widened
by the ⌈(n + 1)·coverage⌉-th smallest score. When calibration and new rows are exchangeable
this covers at least `coverage` of new outcomes, and at most `coverage + 1/(n + 1)`.

Two extensions used here:

- **Bucketed outcomes.** A customer reads a window of dates, not instants: an outcome
  counts as covered when its bucket (the local calendar day of the delivery) meets the
  window's buckets. With the outcome known to lie in [y_low, y_high), the row is covered by
  [lo − c, hi + c] mapped to buckets iff lo − c < y_high and hi + c ≥ y_low, so the score
  max(lo − y_high, y_low − hi) is again the smallest c that covers it; for a point outcome
  (y_low = y_high) it is the usual CQR score.
- **Outcomes never observed** (a lost parcel) score +inf: they count against coverage in
  calibration as they do in evaluation.
- **Groups** (Mondrian conformal): one offset per group (carrier) with enough calibration
  rows, so the coverage holds within each group and not only on average; smaller groups
  share the offset of all rows.

Why not MAPIE: its regressors refit or wrap an sklearn estimator and score point outcomes;
here the calibration window is fixed by time (the latest labelled rows before the test
window), the outcome is a date bucket and some outcomes are censored. The method is a few
lines, written out below.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from models.served.window import ALL_ROWS, ConformalOffsets

MIN_GROUP_ROWS = 200


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ⌈(n + 1)·coverage⌉-th smallest score: the split-conformal offset.

    Args:
        scores: Conformity scores of the calibration rows (+inf allowed).
        coverage: Stated coverage, in (0, 1).

    Returns:
        The offset; +inf when there are too few rows (or too many infinite scores) for the
        stated coverage.

    Raises:
        ValueError: `coverage` is not in (0, 1).
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    values = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(values) + 1) * coverage)
    if rank > len(values):
        return math.inf
    return float(values[rank - 1])


def window_scores(
    lo: np.ndarray, hi: np.ndarray, y_low: np.ndarray, y_high: np.ndarray
) -> np.ndarray:
    """Conformity scores of windows [lo, hi] for outcomes known to lie in [y_low, y_high).

    The smallest c with lo − c < y_high and hi + c ≥ y_low: how much the window must grow on
    both sides (negative: may shrink) to meet the outcome's bucket. A point outcome has
    y_low = y_high; an outcome never observed has y_low = +inf (score +inf).
    """
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    y_low = np.asarray(y_low, dtype=np.float64)
    y_high = np.asarray(y_high, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        scores = np.maximum(lo - y_high, y_low - hi)
    return np.where(np.isposinf(y_low), np.inf, scores)


def fit_offsets(
    scores: np.ndarray,
    coverage: float,
    groups: pd.Series | np.ndarray | None = None,
    min_rows: int = MIN_GROUP_ROWS,
) -> ConformalOffsets:
    """Offsets from the calibration rows' conformity scores, per group where it has enough.

    Args:
        scores: Conformity scores (`window_scores`) of the calibration window.
        coverage: Stated coverage.
        groups: Group of each row (Mondrian conformal); None for one offset.
        min_rows: Groups with fewer calibration rows use the all-rows offset.

    Raises:
        ValueError: No calibration rows.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        raise ValueError("no calibration rows to fit conformal offsets on")
    offsets = {ALL_ROWS: conformal_quantile(scores, coverage)}
    rows = {ALL_ROWS: len(scores)}
    if groups is not None:
        keys = pd.Series(np.asarray(groups, dtype=object)).astype("string").fillna("")
        for key, index in keys.groupby(keys, sort=True).groups.items():
            if len(index) >= min_rows:
                offsets[str(key)] = conformal_quantile(scores[np.asarray(index)], coverage)
                rows[str(key)] = len(index)
    return ConformalOffsets(coverage, offsets, rows)
