"""Probability calibration: isotonic or Platt, chosen on the validation window.

Scores drive expected-value decisions downstream (risk × value × uplift), so a 0.3 must mean
three parcels in ten. Both calibrators are judged by cross-validation within the
validation window (a calibrator scored on the rows it was fitted on always flatters the
more flexible isotonic fit); the winner is then refitted on the whole window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss
from sklearn.model_selection import StratifiedKFold

from models.served.calibration import EPS, Calibrator, logit

log = logging.getLogger(__name__)

METHODS = ("isotonic", "platt")
CRITERIA = ("brier", "log_loss")


def fit_calibrator(
    method: str, raw: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
) -> Calibrator:
    """Fit one calibrator on raw probabilities and 0/1 outcomes (optionally row-weighted).

    Raises:
        ValueError: Unknown method.
    """
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if method == "isotonic":
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(raw, y, sample_weight=weight)
        return Calibrator("isotonic", isotonic=model)
    if method == "platt":
        # Platt on the logit of the raw probability: a slope and an intercept on the scale
        # where LightGBM's own errors are roughly linear. No regularisation: two parameters
        # need none.
        model = LogisticRegression(C=np.inf)
        model.fit(logit(raw).reshape(-1, 1), y.astype(int), sample_weight=weight)
        return Calibrator("platt", platt=model)
    if method == "identity":
        return Calibrator("identity")
    raise ValueError(f"unknown calibration method {method!r}; choose from {METHODS}")


def _loss(criterion: str, y: np.ndarray, p: np.ndarray, weight: np.ndarray | None = None) -> float:
    if criterion == "brier":
        return float(brier_score_loss(y, p, sample_weight=weight))
    if criterion == "log_loss":
        clipped = np.clip(p, EPS, 1 - EPS)
        return float(log_loss(y, clipped, labels=[0, 1], sample_weight=weight))
    raise ValueError(f"unknown criterion {criterion!r}; choose from {CRITERIA}")


@dataclass(frozen=True)
class CalibrationChoice:
    """The chosen calibrator and the cross-validated loss of every candidate."""

    calibrator: Calibrator
    criterion: str
    losses: dict[str, float]


def choose_calibrator(
    raw: np.ndarray,
    y: np.ndarray,
    methods: tuple[str, ...] = METHODS,
    criterion: str = "brier",
    folds: int = 5,
    seed: int = 7,
    min_isotonic_rows: int = 0,
    weight: np.ndarray | None = None,
) -> CalibrationChoice:
    """Pick the calibration method with the lowest cross-validated loss, refit it on all rows.

    Args:
        raw: Raw model probabilities on the validation window.
        y: Their 0/1 outcomes.
        methods: Candidates ("isotonic", "platt", "identity").
        criterion: "brier" or "log_loss".
        folds: Cross-validation folds within the window (fewer when a class is rare).
        seed: Fold assignment seed.
        min_isotonic_rows: With fewer rows, isotonic is left out of the candidates (when
            another remains): a step function fitted on a few hundred rows overfits, and its
            ties cost ranking quality that a cross-validated loss barely sees.
        weight: Row weights for fitting and judging (e.g. inverse propensities, so the
            calibration holds for every action, not only for those a logging policy chose).

    Returns:
        The refitted winner and every candidate's loss ("raw" = no calibration, for reference).

    Raises:
        ValueError: Only one class in `y`: nothing to calibrate against.
    """
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {CRITERIA}")
    minority = int(min(y.sum(), len(y) - y.sum()))
    if minority == 0:
        raise ValueError("calibration needs both outcomes in the validation window")
    k = max(2, min(folds, minority))
    if len(y) < min_isotonic_rows and any(m != "isotonic" for m in methods):
        methods = tuple(m for m in methods if m != "isotonic")
    losses: dict[str, float] = {"raw": _loss(criterion, y, raw, w)}
    for method in methods:
        predicted = np.empty_like(raw)
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for fit_rows, held_rows in splitter.split(raw.reshape(-1, 1), y):
            fit_weight = None if w is None else w[fit_rows]
            calibrator = fit_calibrator(method, raw[fit_rows], y[fit_rows], fit_weight)
            predicted[held_rows] = calibrator(raw[held_rows])
        losses[method] = _loss(criterion, y, predicted, w)
    best = min(methods, key=lambda m: losses[m])
    log.info(
        "calibration by %s (%d-fold): %s; chose %s",
        criterion,
        k,
        ", ".join(f"{m} {v:.5f}" for m, v in losses.items()),
        best,
    )
    return CalibrationChoice(fit_calibrator(best, raw, y, w), criterion, losses)
