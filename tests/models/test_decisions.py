"""Rows with the same decision key get the same LightGBM answers, and the memo returns them."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from models.served.decisions import DecisionKey, DecisionMemo

FEATURES = 5  # distance, scans, a category, a feature no split uses, a zero-heavy count


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.uniform(0, 1_000, n),
            rng.integers(0, 6, n).astype(float),
            rng.integers(0, 4, n).astype(float),
            np.zeros(n),
            np.where(rng.random(n) < 0.5, 0.0, rng.exponential(3.0, n)),
        ]
    )
    x[rng.random(n) < 0.1, 0] = np.nan
    logit = np.nan_to_num(x[:, 0], nan=500) / 300 - 2 + (x[:, 2] == 1) * 1.5 + 0.2 * x[:, 4]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


@pytest.fixture(scope="module", params=[False, True], ids=["nan-missing", "zero-missing"])
def booster(request) -> lgb.Booster:
    x, y = _data(4_000, 3)
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "min_data_in_leaf": 10,
        "verbose": -1,
        "zero_as_missing": request.param,
        "seed": 1,
    }
    data = lgb.Dataset(x, y, categorical_feature=[2], free_raw_data=False)
    return lgb.train(params, data, num_boost_round=40)


def _splits(booster: lgb.Booster) -> dict[int, list[float]]:
    out: dict[int, set[float]] = {}
    for tree in booster.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" in node and node["decision_type"] == "<=":
                out.setdefault(node["split_feature"], set()).add(float(node["threshold"]))
            if "split_feature" in node:
                stack += [node["left_child"], node["right_child"]]
    return {f: sorted(t) for f, t in out.items()}


def _edge_rows(booster: lgb.Booster, seed: int) -> np.ndarray:
    """Rows whose numbers sit on a threshold, one float either side of it, at zero, a hair
    from zero or missing: where a wrong key would put rows of different decisions together."""
    x, _ = _data(3_000, seed)
    rng = np.random.default_rng(seed)
    for feature, thresholds in _splits(booster).items():
        t = np.asarray(thresholds)
        picked = t[rng.integers(0, len(t), len(x))]
        edge = np.stack([picked, np.nextafter(picked, -np.inf), np.nextafter(picked, np.inf)])
        values = edge[rng.integers(0, 3, len(x)), np.arange(len(x))]
        special = rng.choice([0.0, -0.0, 1e-40, -1e-36, 1e-20, np.nan], len(x))
        chosen = rng.random(len(x))
        x[:, feature] = np.where(chosen < 0.6, values, x[:, feature])
        x[:, feature] = np.where(chosen > 0.9, special, x[:, feature])
    return x


def test_rows_with_one_key_get_the_same_contributions_and_score(booster) -> None:
    x = _edge_rows(booster, 11)
    keys = DecisionKey(booster).keys(x)
    contrib = booster.predict(x, pred_contrib=True)
    raw = booster.predict(x, raw_score=True)
    groups: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    shared = [rows for rows in groups.values() if len(rows) > 1]
    # The claim is tested only where rows share a key, and keys tell rows apart.
    assert len(shared) > 50
    assert len(groups) > 100
    for rows in shared:
        assert (contrib[rows] == contrib[rows[0]]).all()
        assert (raw[rows] == raw[rows[0]]).all()
    # A feature no split uses leaves the key alone; one that splits moves it.
    moved = x.copy()
    moved[:, 3] = 123.0
    assert DecisionKey(booster).keys(moved) == keys
    splits = _splits(booster)
    feature, thresholds = next(iter(splits.items()))
    below, above = x[:1].copy(), x[:1].copy()
    below[0, feature], above[0, feature] = thresholds[0], np.nextafter(thresholds[0], np.inf)
    assert DecisionKey(booster).keys(below) != DecisionKey(booster).keys(above)


def test_the_memo_answers_as_the_model_and_keeps_the_latest_rows(booster) -> None:
    x = _edge_rows(booster, 12)[:400]
    direct = booster.predict(x, pred_contrib=True)
    calls: list[int] = []

    def compute(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return booster.predict(rows, pred_contrib=True)

    memo = DecisionMemo(DecisionKey(booster), size=10_000)
    first = np.concatenate([memo.rows(x[i : i + 3], compute) for i in range(0, len(x), 3)])
    again = memo.rows(x, compute)
    assert (first == direct).all()
    assert (again == direct).all()
    distinct = len(set(DecisionKey(booster).keys(x)))
    assert len(memo) == distinct
    assert memo.misses == distinct
    assert memo.hits == 2 * len(x) - distinct
    assert len(calls) <= -(-len(x) // 3)
    # The answers handed out are copies: changing one leaves the memo as it was.
    again[:] = 0.0
    assert (memo.rows(x, compute) == direct).all()

    small = DecisionMemo(DecisionKey(booster), size=2)
    a, b, c = (row[None, :] for row in _distinct_rows(booster, x, 3))
    for row in (a, b, a, c):  # a used again after b: b is the least recent when c comes
        small.rows(row, compute)
    assert len(small) == 2
    assert small.misses == 3
    calls.clear()
    small.rows(a, compute)
    assert calls == []
    small.rows(b, compute)
    assert calls == [1]

    off = DecisionMemo(DecisionKey(booster), size=0)
    assert (off.rows(x, compute) == direct).all()
    assert len(off) == 0
    assert off.hits == 0


def _distinct_rows(booster: lgb.Booster, x: np.ndarray, n: int) -> list[np.ndarray]:
    out, seen = [], set()
    for row, key in zip(x, DecisionKey(booster).keys(x), strict=True):
        if key not in seen:
            seen.add(key)
            out.append(row)
        if len(out) == n:
            return out
    raise AssertionError("too few distinct rows")


def test_only_the_trees_served_count(booster) -> None:
    """A model served at its best iteration keys on the splits of those trees only."""
    few = DecisionKey(booster, num_iteration=3)
    x = _edge_rows(booster, 13)
    keys = few.keys(x)
    contrib = booster.predict(x, pred_contrib=True, num_iteration=3)
    groups: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    assert len(groups) < len(set(DecisionKey(booster).keys(x)))
    for rows in groups.values():
        assert (contrib[rows] == contrib[rows[0]]).all()


def test_a_linear_leaf_keys_on_the_values_it_multiplies() -> None:
    """Leaves fitted as linear functions (`linear_tree`) answer each value differently: rows
    apart in one of their inputs get different keys, rows alike the same answers."""
    x, _ = _data(3_000, 5)
    y = np.nan_to_num(x[:, 0], nan=500) / 100 + x[:, 4]
    params = {"objective": "regression", "linear_tree": True, "num_leaves": 4, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(x, y, free_raw_data=False), num_boost_round=5)
    key = DecisionKey(booster)
    moved = x[:1].copy()
    moved[0, 0] = np.nextafter(moved[0, 0], np.inf)
    assert booster.predict(moved)[0] != booster.predict(x[:1])[0]
    assert key.keys(moved) != key.keys(x[:1])
    rows = np.vstack([x[:200], x[:200]])
    keys = key.keys(rows)
    raw = booster.predict(rows)
    for i in range(200):
        assert keys[i] == keys[i + 200]
        assert raw[i] == raw[i + 200]


def test_rows_computed_ahead_are_counted_apart_from_asks(booster) -> None:
    from models.served.decisions import answering_ahead

    x, _ = _data(50, 9)
    memo = DecisionMemo(DecisionKey(booster), 1_000)

    def compute(rows):
        return booster.predict(rows, pred_contrib=True)

    with answering_ahead():
        memo.rows(x[:30], compute)
        memo.rows(x[:10], compute)
    computed_ahead = memo.ahead
    assert (memo.hits, memo.misses) == (0, 0)
    assert 0 < computed_ahead <= 30
    np.testing.assert_array_equal(memo.rows(x[:30], compute), compute(x[:30]))
    assert (memo.hits, memo.misses, memo.ahead) == (30, 0, computed_ahead)
    memo.rows(x[30:], compute)
    assert memo.misses > 0
    assert memo.ahead == computed_ahead
