"""Fits on datasets binned once grow the trees of fits on datasets of their own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import delay_risk
from models.served.calibration import Calibrator
from models.served.classifier import BaselineStart, CalibratedModel
from training.fit import SharedSets, fit_lightgbm, layout_from_train

FEATURES = ["distance_km", "scans", "carrier"]
REGRESSION = {"objective": "regression", "metric": "l2"}


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "distance_km": rng.gamma(2.0, 400.0, n),
            "scans": rng.poisson(3, n).astype(float),
            "carrier": rng.choice(["north", "south", "east", "west", "air"], n),
        },
        index=rng.permutation(n) + 1_000,
    )
    frame.loc[frame.sample(frac=0.05, random_state=seed).index, "distance_km"] = np.nan
    logit = frame["distance_km"].fillna(800) / 600 - 1.5 + (frame["carrier"] == "air")
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["flipped"] = 1 - frame["label"]
    frame["target"] = logit - 0.2 * frame["scans"] + rng.normal(0, 0.5, n)
    frame["weight"] = rng.uniform(0.1, 3.0, n)
    return frame


# In the order the uplift trainer fits them: a regression, another label, a weighted one,
# then a binary classifier unweighted after the weighted fit.
FITS = [
    ("target", REGRESSION, None),
    ("label", REGRESSION, None),
    ("target", REGRESSION, "weight"),
    ("flipped", {}, None),
]


def _trees(fitted) -> str:
    """The model text from its trees on (the parameters are the same by construction)."""
    text = fitted.booster.model_to_string()
    return text[text.index("Tree=0") :]


def test_fits_on_shared_datasets_equal_fits_on_their_own() -> None:
    """Each fit in turn on one pair of shared datasets (with its own label, weights and
    objective) grows the same trees and stops at the same round as a fit that bins its
    own; a weighted fit's weights do not stay for the unweighted fit after it."""
    train, valid = _rows(4_000, 1), _rows(1_000, 2)
    layout = layout_from_train(train, FEATURES, ["carrier"])
    params = {"num_leaves": 15, "min_data_in_leaf": 20, "seed": 3}
    shared = SharedSets(layout)
    for label, objective, weight in FITS:
        args = (train, valid, layout, label, {**params, **objective}, 200, 10)
        own = fit_lightgbm(*args, weight=weight)
        on_shared = fit_lightgbm(*args, weight=weight, shared=shared)
        assert on_shared.best_iteration == own.best_iteration, label
        assert _trees(on_shared) == _trees(own), (label, weight)
    # The weighted fit differs from the unweighted one on the same label: the weights count.
    unweighted = fit_lightgbm(train, valid, layout, "target", {**params, **REGRESSION}, 200, 10)
    weighted = fit_lightgbm(
        train, valid, layout, "target", {**params, **REGRESSION}, 200, 10, weight="weight"
    )
    assert _trees(unweighted) != _trees(weighted)


def test_shared_datasets_refuse_other_rows() -> None:
    train, valid = _rows(2_000, 1), _rows(500, 2)
    layout = layout_from_train(train, FEATURES, ["carrier"])
    shared = SharedSets(layout)
    fit_lightgbm(train, valid, layout, "label", {}, 20, 5, shared=shared)
    with pytest.raises(ValueError, match="rows other than theirs"):
        fit_lightgbm(train.iloc[::-1], valid, layout, "label", {}, 20, 5, shared=shared)


def _rated_rows(n: int, seed: int) -> pd.DataFrame:
    """`_rows` whose label follows a trailing late rate that no feature holds (the delay-risk
    baseline's columns; the origin is known, so the lane's rate is the baseline)."""
    frame = _rows(n, seed)
    rng = np.random.default_rng(seed + 100)
    frame["lane_late_rate_28d"] = rng.uniform(0.02, 0.6, n)
    frame["carrier_late_rate_28d"] = 0.1
    frame["late"] = (rng.random(n) < frame["lane_late_rate_28d"]).astype(int)
    return frame


RATED = [*FEATURES, "lane_late_rate_28d", "carrier_late_rate_28d"]


def test_trees_fitted_from_an_offset_start_from_it(tmp_path) -> None:
    """A fit from the baseline starts at the baseline's probabilities, where a fit from the
    mean starts at one probability for every row; the served model adds the same log-odds
    after a save and load, and its contributions add up to them."""
    train, valid, test = _rated_rows(2_000, 4), _rated_rows(500, 5), _rated_rows(1_000, 6)
    layout = layout_from_train(train, RATED, ["carrier"])
    # One tree that moves nothing: what each fit starts from.
    params = {"num_leaves": 2, "min_data_in_leaf": 20, "learning_rate": 1e-9}
    args = (train, valid, layout, "late", params, 1, 0)
    from_mean = fit_lightgbm(*args).raw_score(test)
    start = BaselineStart(delay_risk.NAME, 0.1)
    fitted = fit_lightgbm(*args, offset=start)
    assert np.ptp(from_mean) < 1e-6
    np.testing.assert_allclose(fitted.raw_score(test), delay_risk.baseline(test), rtol=1e-6)

    model = CalibratedModel(
        delay_risk.NAME,
        fitted.booster,
        fitted.best_iteration,
        layout,
        Calibrator("identity"),
        offset=fitted.offset,
    )
    loaded = CalibratedModel.load(model.save(tmp_path / "model"))
    assert loaded.offset == start
    np.testing.assert_allclose(loaded.predict_proba(test), fitted.raw_score(test))
    contributions = loaded.contributions(test)
    np.testing.assert_allclose(
        1 / (1 + np.exp(-contributions.sum(axis=1))), fitted.raw_score(test), rtol=1e-6
    )


def test_a_row_without_any_rate_starts_from_the_windows_rate_whatever_is_asked_with_it() -> None:
    """The baseline's own last resort is the mean carrier rate of the rows given; a model's
    start is fixed with the model, so one row scores alike alone and among others."""
    rows = _rated_rows(50, 9).reset_index(drop=True)
    rows.loc[0, ["lane_late_rate_28d", "carrier_late_rate_28d"]] = np.nan
    start = BaselineStart(delay_risk.NAME, 0.07)
    alone, among = start(rows.iloc[:1]), start(rows)
    assert alone[0] == among[0] == 0.07
    # Without the start's rate the same row depends on the rows asked with it.
    assert delay_risk.baseline(rows.iloc[:1])[0] != delay_risk.baseline(rows)[0]


def test_an_offset_refuses_shared_datasets() -> None:
    train, valid = _rated_rows(500, 7), _rated_rows(200, 8)
    layout = layout_from_train(train, FEATURES, ["carrier"])
    with pytest.raises(ValueError, match="offset"):
        fit_lightgbm(
            train,
            valid,
            layout,
            "late",
            shared=SharedSets(layout),
            offset=BaselineStart(delay_risk.NAME, 0.1),
        )
