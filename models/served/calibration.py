"""The fitted map from a model's raw probability to a calibrated one.

Fitting and choosing a calibrator is training's (`training.calibrate`); this is the object
that is stored with the model and applied wherever it scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

# Probabilities are clipped this far from 0 and 1 before a logit.
EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities, clipped `EPS` from 0 and 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
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
