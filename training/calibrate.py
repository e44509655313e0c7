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

from models.served.calibration import EPS, ArmCalibration, Calibrator, logit

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


# An arm gets its own calibrator only with this many validation rows and this many of its
# rarer outcome; with fewer, it keeps the shared one (a map fitted on a few dozen events
# would move its mean by noise).
MIN_ARM_ROWS = 500
MIN_ARM_EVENTS = 50


@dataclass(frozen=True)
class ArmCalibrationChoice:
    """Calibrators per arm and what decided them.

    Attributes:
        calibration: The per-arm calibrators (None for an arm that keeps the shared one).
        choices: Arm ("control", "treated") → its calibration choice, for those fitted.
        fallbacks: Arm → why it keeps the shared calibrator.
    """

    calibration: ArmCalibration
    choices: dict[str, CalibrationChoice]
    fallbacks: dict[str, str]


def choose_arm_calibration(
    raw: np.ndarray,
    y: np.ndarray,
    control: np.ndarray,
    feature: str,
    control_value: str,
    weight: np.ndarray | None = None,
    min_rows: int = MIN_ARM_ROWS,
    min_events: int = MIN_ARM_EVENTS,
    **choose,
) -> ArmCalibrationChoice:
    """Choose a calibrator for the control arm's rows and one for the other rows, each by
    `choose_calibrator` on its own rows under the same weights.

    An arm with fewer than `min_rows` rows or `min_events` of either outcome keeps the
    shared calibrator (logged as a warning).

    Args:
        raw: Raw model probabilities on the validation window.
        y: Their 0/1 outcomes.
        control: Whether each row is the control arm's.
        feature: The model input naming the arm.
        control_value: Its value on the control arm.
        weight: Row weights, as for the shared calibrator.
        min_rows: Fewest rows for an arm's own calibrator.
        min_events: Fewest rows of the arm's rarer outcome for its own calibrator.
        **choose: `choose_calibrator`'s other arguments (methods, criterion, ...).
    """
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    control = np.asarray(control, dtype=bool)
    choices: dict[str, CalibrationChoice] = {}
    fallbacks: dict[str, str] = {}
    for arm, rows in (("control", control), ("treated", ~control)):
        positives = int(y[rows].sum())
        rarer = min(positives, int(rows.sum()) - positives)
        if rows.sum() < min_rows or rarer < min_events:
            fallbacks[arm] = (
                f"{int(rows.sum())} rows, {rarer} of the rarer outcome "
                f"(needs {min_rows} and {min_events})"
            )
            log.warning("%s arm keeps the shared calibrator: %s", arm, fallbacks[arm])
            continue
        arm_weight = None if weight is None else np.asarray(weight, dtype=np.float64)[rows]
        choices[arm] = choose_calibrator(raw[rows], y[rows], weight=arm_weight, **choose)
    calibration = ArmCalibration(
        feature=feature,
        control=control_value,
        control_calibrator=choices["control"].calibrator if "control" in choices else None,
        treated_calibrator=choices["treated"].calibrator if "treated" in choices else None,
    )
    return ArmCalibrationChoice(calibration, choices, fallbacks)
