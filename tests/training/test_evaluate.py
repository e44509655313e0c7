"""Metrics: ECE, capacity, lift and per-segment tables on hand-checkable numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from training.evaluate import (
    binary_metrics,
    capacity_rows,
    expected_calibration_error,
    flatten_segments,
    metric_key,
    paired_auc_difference,
    segment_metrics,
)


def test_ece_of_perfect_and_of_shifted_probabilities() -> None:
    y = np.array([0, 1] * 50)
    assert expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(100, 0.7)) == pytest.approx(0.2)
    # Two bins: 0.1 predicted where 20 % happen, 0.9 where 90 % happen.
    y = np.array([1] * 2 + [0] * 8 + [1] * 9 + [0])
    p = np.array([0.1] * 10 + [0.9] * 10)
    assert expected_calibration_error(y, p) == pytest.approx((0.1 * 10 + 0.0 * 10) / 20)


@pytest.mark.parametrize(("n", "capacity", "k"), [(100, 0.05, 5), (100, 7, 7), (3, 0.01, 1)])
def test_capacity_rows(n: int, capacity: float, k: int) -> None:
    assert capacity_rows(n, capacity) == k


def test_precision_recall_at_capacity_and_lift() -> None:
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0] * 10)
    scores = np.where(y == 1, 0.9, 0.1) + np.linspace(0, 0.01, 100)
    metrics = binary_metrics(y, scores, capacity=0.1)
    assert metrics["roc_auc"] == pytest.approx(1.0)
    assert metrics["precision_at_k"] == pytest.approx(1.0)
    assert metrics["recall_at_k"] == pytest.approx(10 / 30)
    assert metrics["lift_top_decile"] == pytest.approx(1 / 0.3)
    rank_only = binary_metrics(y, scores * 10, probabilities=False)
    assert "brier" not in rank_only
    assert "ece" not in rank_only


def test_one_class_gives_nan_not_an_error() -> None:
    metrics = binary_metrics(np.zeros(10, dtype=int), np.linspace(0, 1, 10))
    assert math.isnan(metrics["roc_auc"])
    assert math.isnan(metrics["recall_at_k"])


def test_segment_metrics_and_their_metric_names() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "label": rng.integers(0, 2, 200),
            "carrier": ["A"] * 100 + ["B>C"] * 90 + [None] * 10,
        }
    )
    frame["score"] = rng.uniform(size=200)
    table = segment_metrics(frame, ["carrier"], {"model": "score"}, min_rows=30)
    assert set(table["value"]) == {"A", "B>C", "(missing)"}
    small = table[table["value"] == "(missing)"].iloc[0]
    assert small["rows"] == 10
    assert math.isnan(small["roc_auc"])
    flat = flatten_segments(table, "test_segment", ("roc_auc",))
    assert "test_segment.carrier.B_C.model.roc_auc" in flat
    assert metric_key("a b", "x/y") == "a_b.x_y"


def test_paired_auc_difference_holds_zero_for_equal_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    scores = y + rng.normal(0, 1, 400)
    difference, low, high = paired_auc_difference(y, scores, scores, resamples=200)
    assert difference == low == high == 0.0


def test_paired_auc_difference_is_positive_for_a_better_score():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600)
    better = y + rng.normal(0, 0.5, 600)
    worse = y + rng.normal(0, 3.0, 600)
    difference, low, high = paired_auc_difference(y, better, worse, resamples=200)
    assert 0 < low < difference < high


def test_paired_auc_difference_is_nan_with_one_class():
    difference, low, high = paired_auc_difference(np.ones(5), np.arange(5), np.arange(5))
    assert np.isnan([difference, low, high]).all()
