"""A fit on a Dask cluster is the same model from run to run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.fit import layout_from_train
from training.fit_cluster import fit_lightgbm_on_cluster

pytestmark = pytest.mark.slow

pytest.importorskip("distributed")


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "distance_km": rng.gamma(2.0, 400.0, n),
            "scans": rng.poisson(3, n).astype(float),
            "carrier": rng.choice(["north", "south", "east", "west", "air"], n),
        }
    )
    logit = frame["distance_km"] / 600 - 1.5 + (frame["carrier"] == "air") - 0.2 * frame["scans"]
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def test_the_same_data_give_the_same_model_at_every_fit(dask_cluster) -> None:
    """lightgbm.dask ranks the workers in the order the parts are listed; listed by a set,
    the ranks (and the model) changed from fit to fit."""
    _, client = dask_cluster
    train, valid = _rows(6_000, 1), _rows(1_500, 2)
    layout = layout_from_train(train, ["distance_km", "scans", "carrier"], ["carrier"])
    params = {"num_leaves": 15, "min_data_in_leaf": 20, "seed": 3}
    trees = []
    for _ in range(5):
        fitted = fit_lightgbm_on_cluster(
            client, train, valid, layout, params=params, num_boost_round=40
        )
        # The trees, without the parameters (the network's ports differ at every fit).
        trees.append(fitted.booster.model_to_string().split("\nparameters:\n")[0])
    assert "Tree=39" in trees[0]
    assert len(set(trees)) == 1
