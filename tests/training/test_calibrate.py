"""Calibration: a miscalibrated score gets a lower Brier score; the choice is by held-out loss."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from training.calibrate import choose_calibrator, fit_calibrator


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn from true probabilities, and an overconfident score of them (the logit
    doubled and shifted): same ranking, wrong probabilities."""
    rng = np.random.default_rng(seed)
    true_p = rng.beta(2, 5, n)
    y = (rng.uniform(size=n) < true_p).astype(int)
    logit = np.log(true_p / (1 - true_p))
    raw = 1 / (1 + np.exp(-(2.0 * logit + 0.8)))
    return raw, y


def test_calibration_lowers_brier_on_new_rows() -> None:
    raw_fit, y_fit = _miscalibrated(4000, seed=1)
    raw_new, y_new = _miscalibrated(4000, seed=2)
    choice = choose_calibrator(raw_fit, y_fit)
    before = brier_score_loss(y_new, raw_new)
    after = brier_score_loss(y_new, choice.calibrator(raw_new))
    assert after < before - 0.01
    assert choice.losses[choice.calibrator.method] < choice.losses["raw"]
    assert set(choice.losses) == {"raw", "isotonic", "platt"}


def test_platt_is_chosen_when_the_error_is_a_logit_line() -> None:
    # The distortion is exactly linear on the logit scale, which is Platt's model.
    raw, y = _miscalibrated(3000, seed=3)
    choice = choose_calibrator(raw, y, criterion="log_loss")
    assert choice.calibrator.method == "platt"


@pytest.mark.parametrize("method", ["isotonic", "platt", "identity"])
def test_calibrators_keep_probabilities_in_range_and_order(method: str) -> None:
    raw, y = _miscalibrated(1000, seed=4)
    calibrator = fit_calibrator(method, raw, y)
    grid = np.linspace(0, 1, 101)
    out = calibrator(grid)
    assert ((out >= 0) & (out <= 1)).all()
    assert (np.diff(out) >= -1e-12).all()


def test_errors() -> None:
    with pytest.raises(ValueError, match="both outcomes"):
        choose_calibrator(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibrator("beta", np.array([0.1, 0.9]), np.array([0, 1]))
    with pytest.raises(ValueError, match="unknown criterion"):
        choose_calibrator(np.array([0.1, 0.9]), np.array([0, 1]), criterion="auc")


def test_isotonic_is_left_out_below_its_minimum_rows() -> None:
    raw, y = _miscalibrated(600, seed=5)
    choice = choose_calibrator(raw, y, min_isotonic_rows=1000)
    assert set(choice.losses) == {"raw", "platt"}
    assert choice.calibrator.method == "platt"
    # The minimum never leaves no candidate, and enough rows keep isotonic in.
    assert choose_calibrator(
        raw, y, methods=("isotonic",), min_isotonic_rows=1000
    ).losses.keys() == {
        "raw",
        "isotonic",
    }
    assert "isotonic" in choose_calibrator(raw, y, min_isotonic_rows=600).losses


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_integer_weights_calibrate_as_repeated_rows(method) -> None:
    rng = np.random.default_rng(9)
    raw = rng.uniform(0.01, 0.99, 400)
    y = (rng.random(400) < raw**2).astype(int)
    weight = rng.integers(1, 4, 400)
    weighted = fit_calibrator(method, raw, y, weight.astype(float))
    repeated = fit_calibrator(method, np.repeat(raw, weight), np.repeat(y, weight))
    grid = np.linspace(0.02, 0.98, 25)
    np.testing.assert_allclose(weighted(grid), repeated(grid), atol=1e-6)
