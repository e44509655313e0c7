"""Fits on datasets binned once grow the trees of fits on datasets of their own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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
