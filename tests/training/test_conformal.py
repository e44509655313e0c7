"""Conformal calibration: nominal coverage on data whose distribution is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.served.window import ALL_ROWS, ConformalOffsets, conformalize
from training.conformal import (
    ADAPTIVE,
    adaptive_offsets,
    conformal_quantile,
    fit_offsets,
    window_scores,
)

COVERAGE = 0.9


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """x ~ U(0, 4); y | x ~ N(x, (0.5 + x/2)²): the noise grows with x."""
    x = rng.uniform(0.0, 4.0, n)
    return x, x + (0.5 + x / 2.0) * rng.standard_normal(n)


def _too_narrow(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantile estimates at the right centre with half the true spread."""
    half = 0.5 * 1.645 * (0.5 + x / 2.0)
    return x - half, x, x + half


def test_rank_rule() -> None:
    scores = np.arange(1.0, 10.0)  # 9 scores: rank ceil(10 * 0.9) = 9
    assert conformal_quantile(scores, 0.9) == 9.0
    assert conformal_quantile(scores, 0.5) == 5.0
    assert conformal_quantile(scores[:5], 0.9) == math.inf  # too few rows for 90 %
    with pytest.raises(ValueError, match="coverage"):
        conformal_quantile(scores, 1.0)


def test_reaches_nominal_coverage_of_a_known_distribution() -> None:
    rng = np.random.default_rng(3)
    x, y = _draw(rng, 3_000)
    lo, mid, hi = _too_narrow(x)
    offsets = fit_offsets(window_scores(lo, hi, y, y), COVERAGE)
    x_new, y_new = _draw(rng, 50_000)
    lo, mid, hi = _too_narrow(x_new)
    raw = np.mean((lo <= y_new) & (y_new <= hi))
    lo, mid, hi = conformalize(lo, mid, hi, offsets.for_groups(None, len(x_new)))
    covered = np.mean((lo <= y_new) & (y_new <= hi))
    assert raw < 0.7
    assert covered == pytest.approx(COVERAGE, abs=0.015)


def test_bucketed_outcomes_reach_nominal_coverage_of_their_buckets() -> None:
    """Outcomes read as whole units (days): a window covers the bucket it meets."""
    rng = np.random.default_rng(5)
    x, y = _draw(rng, 3_000)
    lo, _, hi = _too_narrow(x)
    bucket = np.floor(y)
    offsets = fit_offsets(window_scores(lo, hi, bucket, bucket + 1.0), COVERAGE)
    x_new, y_new = _draw(rng, 50_000)
    lo, _mid, hi = conformalize(*_too_narrow(x_new), offsets.offsets[ALL_ROWS])
    day = np.floor(y_new)
    covered = np.mean((np.floor(lo) <= day) & (day <= np.floor(hi)))
    assert covered == pytest.approx(COVERAGE, abs=0.015)


def test_per_group_offsets_hold_coverage_in_each_group() -> None:
    rng = np.random.default_rng(9)
    n = 6_000
    group = np.where(rng.random(n) < 0.5, "steady", "erratic")
    y = rng.standard_normal(n) * np.where(group == "erratic", 3.0, 1.0)
    zero = np.zeros(n)
    scores = window_scores(zero - 1.0, zero + 1.0, y, y)
    pooled = fit_offsets(scores, COVERAGE)
    mondrian = fit_offsets(scores, COVERAGE, group)
    assert set(mondrian.offsets) == {ALL_ROWS, "steady", "erratic"}
    g_new = np.where(rng.random(40_000) < 0.5, "steady", "erratic")
    y_new = rng.standard_normal(40_000) * np.where(g_new == "erratic", 3.0, 1.0)
    for offsets, tolerance in ((mondrian, 0.015), (pooled, None)):
        c = offsets.for_groups(g_new, len(g_new))
        inside = np.abs(y_new) <= 1.0 + c
        steady, erratic = inside[g_new == "steady"].mean(), inside[g_new == "erratic"].mean()
        if tolerance is not None:
            assert steady == pytest.approx(COVERAGE, abs=tolerance)
            assert erratic == pytest.approx(COVERAGE, abs=tolerance)
        else:  # one offset for all over-covers one group and under-covers the other
            assert steady > 0.95
            assert erratic < 0.85


def test_small_groups_fall_back_to_all_rows() -> None:
    scores = np.linspace(0.0, 1.0, 300)
    groups = np.array(["big"] * 250 + ["small"] * 50)
    offsets = fit_offsets(scores, COVERAGE, groups, min_rows=100)
    assert set(offsets.offsets) == {ALL_ROWS, "big"}
    got = offsets.for_groups(np.array(["small", "unseen", "big"]), 3)
    assert got[0] == got[1] == offsets.offsets[ALL_ROWS]
    assert got[2] == offsets.offsets["big"]
    assert ConformalOffsets.from_dict(offsets.to_dict()) == offsets


def test_unobserved_outcomes_count_against_coverage() -> None:
    y = np.linspace(-1.0, 1.0, 900)
    lost = np.full(100, np.inf)
    scores = window_scores(np.zeros(1000), np.zeros(1000), np.r_[y, lost], np.r_[y, lost])
    assert np.isinf(scores[-100:]).all()
    # 85 %: the 851st smallest of 1001 (900 observed before the 100 lost ones).
    assert conformal_quantile(scores, 0.85) == np.sort(np.abs(y))[850]
    # 90 % needs 901 covered rows, and only 900 can be.
    assert conformal_quantile(scores, COVERAGE) == math.inf


def test_windows_are_ordered_even_when_quantiles_cross() -> None:
    lo = np.array([2.0, 0.0, 1.0])
    mid = np.array([1.0, 0.5, 1.0])
    hi = np.array([0.0, 1.0, 1.0])
    for offset in (-5.0, 0.0, 0.3):
        a, b, c = conformalize(lo, mid, hi, offset)
        assert (a <= b).all()
        assert (b <= c).all()
    a, b, c = conformalize(lo, mid, hi, 0.3)
    np.testing.assert_allclose(a, [-0.3, -0.3, 0.7])
    np.testing.assert_allclose(c, [2.3, 1.3, 1.3])


# A stream of decisions, one an hour, each outcome known a day later; the first
# CALIBRATION_ROWS are the calibration window, the rest are scored.
STREAM_ROWS = 8000
CALIBRATION_ROWS = 1500
LAG = pd.Timedelta(hours=24)


def _stream(spread: np.ndarray, seed: int = 0) -> tuple[np.ndarray, pd.Series, pd.Series]:
    """Scores of the window [−1.645, 1.645] (right for a unit spread) for y ~ N(0, spread²),
    with each row's decision instant and the instant its outcome is known."""
    y = spread * np.random.default_rng(seed).standard_normal(len(spread))
    scores = window_scores(np.full(len(y), -1.645), np.full(len(y), 1.645), y, y)
    decided = pd.Series(pd.date_range("2024-01-01", periods=len(y), freq="h", tz="UTC"))
    return scores, decided, decided + LAG


def _coverages(spread: np.ndarray) -> tuple[float, float]:
    """Coverage of the scored rows with the split offset and with the adaptive ones."""
    scores, decided, known = _stream(spread)
    fixed = fit_offsets(scores[:CALIBRATION_ROWS], COVERAGE).offsets[ALL_ROWS]
    adaptive = adaptive_offsets(scores, decided, known, COVERAGE).offsets
    scored = slice(CALIBRATION_ROWS, None)
    return (
        float(np.mean(scores[scored] <= fixed)),
        float(np.mean(scores[scored] <= adaptive[scored])),
    )


def test_adaptive_offsets_hold_coverage_when_the_spread_grows() -> None:
    # Unit spread through calibration, then growing to 3: the split window under-covers.
    spread = np.concatenate(
        [np.ones(CALIBRATION_ROWS), np.linspace(1.0, 3.0, STREAM_ROWS - CALIBRATION_ROWS)]
    )
    fixed, adaptive = _coverages(spread)
    assert fixed < 0.75
    assert abs(adaptive - COVERAGE) < 0.02


def test_adaptive_offsets_hold_coverage_when_the_level_jumps() -> None:
    spread = np.where(np.arange(STREAM_ROWS) < 3000, 1.0, 2.0)
    fixed, adaptive = _coverages(spread)
    assert fixed < 0.75
    assert abs(adaptive - COVERAGE) < 0.02


def test_adaptive_offsets_hold_coverage_without_drift() -> None:
    fixed, adaptive = _coverages(np.ones(STREAM_ROWS))
    assert abs(fixed - COVERAGE) < 0.02
    assert abs(adaptive - COVERAGE) < 0.02


def test_adaptive_offsets_use_only_outcomes_known_before_each_decision() -> None:
    scores, decided, known = _stream(np.ones(3000))
    cut = decided.iloc[2000]
    before = adaptive_offsets(scores, decided, known, COVERAGE).offsets
    # Outcomes known at or after the cut change wildly; no decision before it may notice.
    later = (known >= cut).to_numpy()
    changed = np.where(later, scores + 50.0, scores)
    after = adaptive_offsets(changed, decided, known, COVERAGE).offsets
    decided_before = (decided < cut).to_numpy()
    np.testing.assert_array_equal(before[decided_before], after[decided_before])
    # The first decision after the cut does see them (the test can fail).
    assert not np.array_equal(before[~decided_before], after[~decided_before])


def test_an_outcome_known_at_the_decision_instant_is_not_used() -> None:
    decided = pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True))
    known = pd.Series(pd.to_datetime(["2024-01-02", "2024-01-03"], utc=True))
    offsets = adaptive_offsets(np.array([0.5, 0.1]), decided, known, COVERAGE).offsets
    assert offsets[1] == math.inf


def test_adaptive_groups_fall_back_to_all_rows_and_the_latest_offsets_round_trip() -> None:
    scores, decided, known = _stream(np.ones(1000))
    groups = np.where(np.arange(1000) % 10 == 0, "rare", "common")
    result = adaptive_offsets(scores, decided, known, COVERAGE, groups, min_rows=200)
    latest = result.latest
    assert latest.method == ADAPTIVE
    assert set(latest.offsets) == {ALL_ROWS, "common"}
    assert latest.rows == {ALL_ROWS: 1000, "common": 900}
    assert set(latest.alphas) == set(latest.offsets)
    assert ConformalOffsets.from_dict(latest.to_dict()) == latest
    # Rare rows use the all-rows offset: the one common rows get until they have 200 scores.
    rare = np.flatnonzero(groups == "rare")
    assert np.isfinite(result.offsets[rare[5:]]).all()


def test_split_offsets_read_from_an_older_artefact_say_split() -> None:
    old = {"coverage": 0.9, "offsets": {ALL_ROWS: 0.3}, "rows": {ALL_ROWS: 10}}
    assert ConformalOffsets.from_dict(old).method == "split"


@pytest.mark.parametrize(
    ("coverage", "step", "message"), [(1.0, 0.01, "coverage"), (0.9, -0.1, "step")]
)
def test_adaptive_offsets_reject_bad_arguments(coverage: float, step: float, message: str) -> None:
    scores, decided, known = _stream(np.ones(10))
    with pytest.raises(ValueError, match=message):
        adaptive_offsets(scores, decided, known, coverage, step=step)


def _offset_by_sorting(scores, alpha: float) -> float:
    """The (1 − α) quantile of a state's recent scores, sorted afresh (`_Recent.offset`'s
    rule: finite while any score is)."""
    values = np.sort(np.asarray(list(scores), dtype=np.float64))
    finite = values[np.isfinite(values)]
    rank = math.ceil((len(values) + 1) * (1.0 - alpha))
    if rank < 1:
        return float(values[0]) if len(finite) else 0.0
    if rank > len(values) or not math.isfinite(values[rank - 1]):
        return float(finite[-1]) if len(finite) else math.inf
    return float(values[rank - 1])


def test_a_state_s_offset_is_the_quantile_of_its_latest_scores_at_every_step() -> None:
    """The kept order follows every score in and out of the recent window: ties, +inf,
    NaN, and the oldest score leaving once the window is full; saved scores added back."""
    from training.conformal import _Recent

    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=3000), 1)  # many ties
    scores[rng.random(3000) < 0.05] = np.inf
    scores[rng.random(3000) < 0.02] = np.nan
    state = _Recent(0.1, recent_rows=100)
    for i, score in enumerate(scores):
        given = state.offset() if state.scores else None
        if given is not None:
            assert given == _offset_by_sorting(state.scores, state.alpha), i
        state.learn(float(score), given, step=0.05)
        if i == 1500:  # saved and read back, as a model's state is
            saved = _Recent(0.1, recent_rows=100)
            saved.alpha = state.alpha
            saved.extend(list(state.scores))
            assert saved.offset() == state.offset()
            state = saved
    assert len(state.scores) == 100
    assert state.offset() == _offset_by_sorting(state.scores, state.alpha)
