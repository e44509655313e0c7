"""Calibration: a miscalibrated score gets a lower Brier score; the choice is by held-out loss;
an experiment's control arm and treated arms can each get their own."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from models.served.calibration import calibrate_by_arm
from training.calibrate import choose_arm_calibration, choose_calibrator, fit_calibrator


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


def _two_arms(n: int, seed: int, control_share: float = 0.3):
    """A raw score right for the offers' rows and systematically too high for the control
    arm's (whose true rate is 60% of the score), with inverse-propensity-like weights."""
    rng = np.random.default_rng(seed)
    raw = rng.beta(2, 6, n)
    control = rng.random(n) < control_share
    true_p = np.where(control, 0.6 * raw, raw)
    y = (rng.random(n) < true_p).astype(int)
    weight = np.where(control, 1 / control_share, rng.uniform(1, 20, n))
    return raw, y, control, weight


def test_each_arm_is_calibrated_to_its_own_rate() -> None:
    raw, y, control, weight = _two_arms(20_000, seed=4)
    choose = {"methods": ("isotonic", "platt", "identity"), "weight": weight}
    shared = choose_calibrator(raw, y, **choose).calibrator
    arms = choose_arm_calibration(raw, y, control, "offer_type", "none", **choose)
    calibration = arms.calibration
    assert not arms.fallbacks
    observed = np.average(y[control], weights=weight[control])
    # One map for both arms leaves the control arm over-predicted; its own map does not.
    assert np.average(shared(raw[control]), weights=weight[control]) > observed + 0.02
    by_arm = calibrate_by_arm(
        raw,
        control,
        shared,
        calibration.control_calibrator,
        calibration.treated_calibrator,
    )
    assert np.average(by_arm[control], weights=weight[control]) == pytest.approx(
        observed, abs=0.005
    )
    # The offers' map is the one their own rows choose, under the same weights.
    offers = ~control
    alone = choose_calibrator(
        raw[offers], y[offers], methods=choose["methods"], weight=weight[offers]
    ).calibrator
    np.testing.assert_allclose(by_arm[~control], alone(raw[~control]))
    assert calibration.describe()["control"] == "none"


def test_an_arm_with_too_few_rows_keeps_the_shared_calibrator() -> None:
    raw, y, control, weight = _two_arms(3_000, seed=5, control_share=0.05)
    arms = choose_arm_calibration(raw, y, control, "offer_type", "none", weight=weight)
    assert arms.calibration.control_calibrator is None
    assert arms.calibration.treated_calibrator is not None
    assert set(arms.fallbacks) == {"control"}
    assert arms.calibration.describe()["control_method"] == "shared"
    shared = choose_calibrator(raw, y, weight=weight).calibrator
    by_arm = calibrate_by_arm(raw, control, shared, None, arms.calibration.treated_calibrator)
    np.testing.assert_allclose(by_arm[control], shared(raw[control]))
