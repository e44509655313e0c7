"""One row through LightGBM's single-row path gives exactly `Booster.predict`'s answer."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import pytest

from models.served.single_row import SMALL_ROWS, RowPredictor


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.uniform(0, 1_000, n),
            rng.integers(0, 6, n).astype(float),
            rng.integers(0, 4, n).astype(float),
            np.where(rng.random(n) < 0.5, 0.0, rng.exponential(3.0, n)),
        ]
    )
    x[rng.random(n) < 0.1, 0] = np.nan
    logit = np.nan_to_num(x[:, 0], nan=500) / 300 - 2 + (x[:, 2] == 1) * 1.5 + 0.2 * x[:, 3]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


@pytest.fixture(scope="module", params=["binary", "quantile", "multiclass"])
def booster(request) -> lgb.Booster:
    x, y = _data(3_000, 5)
    params = {"objective": request.param, "num_leaves": 15, "verbose": -1, "seed": 2}
    if request.param == "quantile":
        params["alpha"] = 0.9
        y = x[:, 3] * 10 + y * 5
    if request.param == "multiclass":
        params["num_class"] = 3
        y = y + (x[:, 1] > 3)
    data = lgb.Dataset(x, y, categorical_feature=[2])
    return lgb.train(params, data, num_boost_round=30)


def _rows(seed: int) -> np.ndarray:
    x, _ = _data(60, seed)
    x[0] = np.nan  # every value missing
    x[1, 2] = 7.0  # a category never seen in training
    x[2, 3] = -0.0
    return x


@pytest.mark.parametrize("contributions", [False, True], ids=["value", "contributions"])
@pytest.mark.parametrize("num_iteration", [None, 12])
def test_each_row_is_answered_exactly_as_booster_predict_answers_it(
    booster, contributions, num_iteration
) -> None:
    predictor = RowPredictor(booster, num_iteration, contributions=contributions)
    rows = _rows(11)
    expected = booster.predict(
        rows, num_iteration=num_iteration, pred_contrib=contributions, num_threads=1
    )
    for k in range(len(rows)):
        got = predictor(rows[k : k + 1])
        assert got.shape == expected[k : k + 1].shape
        np.testing.assert_array_equal(got, expected[k : k + 1])
    # A few rows at once (one by one through the single-row path) and many (a batch of
    # `Booster.predict`): the same values, shaped alike.
    for few in (2, SMALL_ROWS):
        got = predictor(rows[:few])
        assert got.shape == expected[:few].shape
        np.testing.assert_array_equal(got, expected[:few])
    assert len(rows) > SMALL_ROWS
    np.testing.assert_array_equal(predictor(rows), expected)


def test_fewer_trees_give_another_answer(booster) -> None:
    """The tree count reaches LightGBM (a predictor ignoring it would pass the test above
    only by chance where the fixture's best iteration is all trees)."""
    rows = _rows(12)[:1]
    assert not np.array_equal(RowPredictor(booster, 3)(rows), RowPredictor(booster, 30)(rows))


def test_a_row_of_the_wrong_width_is_refused_as_booster_predict_refuses_it(booster) -> None:
    predictor = RowPredictor(booster)
    with pytest.raises(lgb.basic.LightGBMError, match="number of features"):
        predictor(np.zeros((1, 3)))


def test_a_predictor_pickles_and_is_shared_between_threads(booster) -> None:
    predictor = RowPredictor(booster, contributions=True)
    rows = _rows(13)
    expected = booster.predict(rows, pred_contrib=True, num_threads=1)
    predictor(rows[:1])  # its C-side configuration exists before it is pickled
    copy = pickle.loads(pickle.dumps(predictor))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda k: (k, copy(rows[k : k + 1])), range(len(rows))))
        answers += list(pool.map(lambda k: (k, predictor(rows[k : k + 1])), range(len(rows))))
    for k, got in answers:
        np.testing.assert_array_equal(got, expected[k : k + 1])
