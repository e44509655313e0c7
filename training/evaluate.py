"""Metrics of a scored window: ranking, calibration, and what a capacity-bound team gets.

The outreach scheduler contacts only the top `capacity` rows, so precision and recall at
that capacity and the lift of the top decile say more about business value than AUC alone.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

log = logging.getLogger(__name__)

ECE_BINS = 10
MIN_SEGMENT_ROWS = 30
MISSING_SEGMENT = "(missing)"


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Row-weighted mean |observed rate − mean prediction| over equal-width probability bins.

    Args:
        y: 0/1 outcomes.
        p: Probabilities in [0, 1].
        bins: Number of equal-width bins on [0, 1].
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    observed = np.bincount(which, weights=y, minlength=bins)
    predicted = np.bincount(which, weights=p, minlength=bins)
    used = count > 0
    gap = np.abs(observed[used] - predicted[used]) / count[used]
    return float(np.sum(gap * count[used]) / len(y))


def capacity_rows(n: int, capacity: float) -> int:
    """How many rows the capacity allows: a share of rows when below 1, else a count."""
    k = math.ceil(capacity * n) if capacity < 1 else int(capacity)
    return max(1, min(n, k))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    # Stable sort on the negated score: ties keep input order, so results are reproducible.
    return np.argsort(-scores, kind="stable")[:k]


def binary_metrics(
    y: np.ndarray, scores: np.ndarray, capacity: float = 0.05, probabilities: bool = True
) -> dict[str, float]:
    """Ranking and calibration metrics of one set of scores.

    Args:
        y: 0/1 outcomes.
        scores: Higher means more likely positive.
        capacity: Rows the team can act on: a share (< 1) or a count (≥ 1).
        probabilities: Whether `scores` are probabilities; Brier and ECE need them.

    Returns:
        rows, positive_rate, roc_auc, pr_auc, precision_at_k, recall_at_k, lift_top_decile,
        and brier, ece, mean_score when `probabilities`. NaN where undefined (one class).
    """
    y = np.asarray(y, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(y)
    positives = int(y.sum())
    out: dict[str, float] = {"rows": float(n), "positive_rate": positives / n if n else math.nan}
    both = 0 < positives < n
    out["roc_auc"] = float(roc_auc_score(y, scores)) if both else math.nan
    out["pr_auc"] = float(average_precision_score(y, scores)) if both else math.nan
    k = capacity_rows(n, capacity) if n else 0
    hits = int(y[_top(scores, k)].sum()) if k else 0
    out["precision_at_k"] = hits / k if k else math.nan
    out["recall_at_k"] = hits / positives if positives else math.nan
    decile = capacity_rows(n, 0.1) if n else 0
    top_rate = y[_top(scores, decile)].mean() if decile else math.nan
    out["lift_top_decile"] = top_rate / out["positive_rate"] if positives else math.nan
    if probabilities:
        out["brier"] = float(brier_score_loss(y, scores)) if n else math.nan
        out["ece"] = expected_calibration_error(y, scores)
        out["mean_score"] = float(scores.mean()) if n else math.nan
    return out


def segment_metrics(
    frame: pd.DataFrame,
    segments: list[str],
    score_cols: dict[str, str],
    label: str = "label",
    capacity: float = 0.05,
    min_rows: int = MIN_SEGMENT_ROWS,
    probabilities: dict[str, bool] | None = None,
) -> pd.DataFrame:
    """Metrics per value of each segment column, for every scorer.

    Args:
        frame: Scored rows with the label, the segment columns and one column per scorer.
        segments: Columns to group by (each on its own); missing values form "(missing)".
        score_cols: Scorer name → score column.
        label: The 0/1 label column.
        capacity: As in `binary_metrics`, applied within each segment.
        min_rows: Segments with fewer rows are reported with counts only.
        probabilities: Scorer name → whether its scores are probabilities (default True).

    Returns:
        One row per (segment, value, scorer) with the metrics as columns.
    """
    probabilities = probabilities or {}
    rows = []
    for segment in segments:
        values = frame[segment].astype("string").fillna(MISSING_SEGMENT)
        for value, part in frame.groupby(values, sort=True, observed=True):
            for scorer, column in score_cols.items():
                y = part[label].to_numpy()
                if len(part) >= min_rows:
                    metrics = binary_metrics(
                        y,
                        part[column].to_numpy(),
                        capacity,
                        probabilities=probabilities.get(scorer, True),
                    )
                else:
                    metrics = {"rows": float(len(part)), "positive_rate": float(np.mean(y))}
                rows.append({"segment": segment, "value": str(value), "scorer": scorer, **metrics})
    return pd.DataFrame(rows)


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name from parts (segment values may hold any character)."""
    safe = ["".join(c if c.isalnum() or c in "_-." else "_" for c in str(p)) for p in parts]
    return ".".join(safe)


def flatten_segments(table: pd.DataFrame, prefix: str, metrics: tuple[str, ...]) -> dict:
    """Segment metrics as flat MLflow metrics: `<prefix>.<segment>.<value>.<scorer>.<metric>`."""
    out = {}
    for record in table.to_dict("records"):
        for metric in metrics:
            value = record.get(metric)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                key = metric_key(
                    prefix, record["segment"], record["value"], record["scorer"], metric
                )
                out[key] = float(value)
    return out


def reliability_plot(
    y: np.ndarray,
    calibrated: np.ndarray,
    raw: np.ndarray | None = None,
    bins: int = ECE_BINS,
    title: str = "",
) -> Figure:
    """Observed rate against mean prediction per equal-width bin, before and after
    calibration."""
    figure = Figure(figsize=(5, 5), layout="constrained")
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    curves = {"calibrated": calibrated} if raw is None else {"raw": raw, "calibrated": calibrated}
    y = np.asarray(y, dtype=np.float64)
    for name, p in curves.items():
        p = np.asarray(p, dtype=np.float64)
        which = np.minimum((p * bins).astype(np.int64), bins - 1)
        count = np.bincount(which, minlength=bins)
        used = count > 0
        mean_p = np.bincount(which, weights=p, minlength=bins)[used] / count[used]
        rate = np.bincount(which, weights=y, minlength=bins)[used] / count[used]
        ece = expected_calibration_error(y, p, bins)
        axes.plot(mean_p, rate, marker="o", label=f"{name} (ECE {ece:.3f})")
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed rate")
    axes.set_title(title)
    axes.legend()
    return figure


def paired_auc_difference(
    y: np.ndarray,
    scores: np.ndarray,
    baseline: np.ndarray,
    resamples: int = 1000,
    seed: int = 7,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """AUC of `scores` less AUC of `baseline` on the same rows, with a paired bootstrap
    interval: each resample draws rows with replacement and scores both on the same draw, so
    the interval reflects the difference, not two independent errors.

    Args:
        y: 0/1 outcomes.
        scores: The model's scores.
        baseline: The baseline's scores on the same rows.
        resamples: Bootstrap draws; draws holding one class only are skipped.
        seed: Random seed.
        level: Coverage of the interval.

    Returns:
        The difference on all rows and the interval's lower and upper bound (NaN when the
        rows hold one class only).
    """
    y = np.asarray(y, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    if not 0 < y.sum() < len(y):
        return math.nan, math.nan, math.nan
    point = float(roc_auc_score(y, scores) - roc_auc_score(y, baseline))
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        drawn = y[rows]
        if not 0 < drawn.sum() < len(drawn):
            continue
        differences.append(
            roc_auc_score(drawn, scores[rows]) - roc_auc_score(drawn, baseline[rows])
        )
    if not differences:
        return point, math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return point, float(low), float(high)
