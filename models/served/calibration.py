"""The fitted map from a model's raw probability to a calibrated one.

Fitting and choosing a calibrator is training's (`training.calibrate`); this is the object
that is stored with the model and applied wherever it scores. A model may also carry one
calibrator per arm of an experiment (`ArmCalibration`): the control arm's rows and the
treated arms' rows each get their own map, which falls back to the shared one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

# Probabilities are clipped this far from 0 and 1 before a logit.
EPS = 1e-6


def logit(p: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Log-odds of probabilities, clipped `eps` from 0 and 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


@dataclass
class Calibrator:
    """A fitted map from raw model probability to calibrated probability.

    Attributes:
        method: "isotonic", "platt" or "identity".
        isotonic: The fitted isotonic regression (method "isotonic").
        platt: The fitted logistic regression on the raw log-odds (method "platt").
    """

    method: str
    isotonic: IsotonicRegression | None = None
    platt: LogisticRegression | None = None

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw scores."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "isotonic" and self.isotonic is not None:
            out = self.isotonic.predict(raw)
        elif self.method == "platt" and self.platt is not None:
            out = self.platt.predict_proba(logit(raw).reshape(-1, 1))[:, 1]
        elif self.method == "identity":
            out = raw
        else:
            raise ValueError(f"calibrator {self.method!r} is not fitted")
        return np.clip(out, 0.0, 1.0)


def fast_calibration(calibrator: Calibrator) -> Callable[[np.ndarray], np.ndarray]:
    """The calibrator as plain numpy: scikit-learn's input checks cost a few hundred
    microseconds per call, more than the model itself for one row (a test holds the two
    equal). Isotonic: linear interpolation between the fitted thresholds, clipped at both
    ends; Platt: a logistic on the logit of the raw probability."""
    if calibrator.method == "isotonic" and calibrator.isotonic is not None:
        xs = np.asarray(calibrator.isotonic.X_thresholds_, dtype=np.float64)
        ys = np.asarray(calibrator.isotonic.y_thresholds_, dtype=np.float64)
        return lambda raw: np.clip(np.interp(np.asarray(raw, dtype=np.float64), xs, ys), 0, 1)
    if calibrator.method == "platt" and calibrator.platt is not None:
        slope = float(calibrator.platt.coef_.ravel()[0])
        intercept = float(calibrator.platt.intercept_.ravel()[0])
        return lambda raw: 1.0 / (1.0 + np.exp(-(slope * logit(raw) + intercept)))
    return lambda raw: np.asarray(calibrator(raw), dtype=np.float64)


@dataclass
class ArmCalibration:
    """Separate calibrators for a control arm and for the treated arms.

    A booster fitted on both arms can be off by different amounts in each (the control
    arm's outcome, buying anyway, is another kind of event than accepting an offer); one
    calibrator fitted on the mix then leaves each arm's mean wrong in opposite directions.
    Rows are told apart by one categorical model input, so the same rows get the same map
    from a frame, a matrix or one request's record.

    Attributes:
        feature: The categorical model input naming the arm (e.g. "offer_type").
        control: Its value on the control arm's rows (e.g. "none").
        control_calibrator: The control arm's map; None: the shared calibrator.
        treated_calibrator: Every other row's map; None: the shared calibrator.
    """

    feature: str
    control: str
    control_calibrator: Calibrator | None = None
    treated_calibrator: Calibrator | None = None

    def control_rows(self, features: Sequence[str], codes: Mapping[str, int], x: np.ndarray):
        """Which rows of an encoded input matrix are the control arm's.

        Args:
            features: The matrix's columns, in order.
            codes: The arm feature's category → code (`FeatureLayout.codes[feature]`).
            x: The model input matrix.
        """
        code = codes.get(self.control)
        if code is None or self.feature not in features:
            return np.zeros(len(x), dtype=bool)
        return np.asarray(x)[:, list(features).index(self.feature)] == code

    def describe(self) -> dict[str, str]:
        """Each arm's method ("shared" where it falls back), for a model's metadata."""
        return {
            "feature": self.feature,
            "control": self.control,
            "control_method": _method(self.control_calibrator),
            "treated_method": _method(self.treated_calibrator),
        }


def _method(calibrator: Calibrator | None) -> str:
    return "shared" if calibrator is None else calibrator.method


def calibrate_by_arm(
    raw: np.ndarray,
    control: np.ndarray,
    shared: Callable[[np.ndarray], np.ndarray],
    control_map: Callable[[np.ndarray], np.ndarray] | None,
    treated_map: Callable[[np.ndarray], np.ndarray] | None,
) -> np.ndarray:
    """Calibrated probabilities, each arm's rows by its own map (the shared one where None).

    Args:
        raw: Raw model probabilities.
        control: Whether each row is the control arm's.
        shared: The shared calibrator.
        control_map: The control arm's calibrator.
        treated_map: The treated arms' calibrator.
    """
    raw = np.asarray(raw, dtype=np.float64)
    control = np.asarray(control, dtype=bool)
    out = np.empty(len(raw), dtype=np.float64)
    for rows, mapping in ((control, control_map), (~control, treated_map)):
        if rows.any():
            out[rows] = np.asarray((mapping or shared)(raw[rows]), dtype=np.float64)
    return np.clip(out, 0.0, 1.0)
