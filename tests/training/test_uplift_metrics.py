"""Qini and uplift curves held to a hand-computed example, and to what they must say of a
random ranking, the true effect's ranking, ties, arm weights and the bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.uplift_metrics import (
    Ranking,
    arm_difference,
    arm_weights,
    auuc,
    bootstrap_intervals,
    curves,
    qini_coefficient,
    resample_counts,
    uplift_at,
    uplift_metrics,
)

# Six rows, given out of order. Ranked by score, highest first, they are:
#   rank  score  treated  outcome
#     1    0.9      1        1
#     2    0.8      0        0
#     3    0.7      1        1
#     4    0.6      0        1
#     5    0.5      1        0
#     6    0.4      0        0
SCORE = np.array([0.5, 0.9, 0.4, 0.7, 0.6, 0.8])
TREATED = np.array([True, True, False, True, False, False])
OUTCOME = np.array([0, 1, 0, 1, 1, 0])


def test_curves_match_the_hand_computed_sums() -> None:
    c = curves(SCORE, OUTCOME, TREATED)
    assert c.n == 6
    # Cumulative over the ranked rows, k = 1..6.
    np.testing.assert_allclose(c.r_t, [1, 1, 2, 2, 2, 2])
    np.testing.assert_allclose(c.r_c, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(c.n_t, [1, 1, 2, 2, 3, 3])
    np.testing.assert_allclose(c.n_c, [0, 1, 1, 2, 2, 3])


def test_qini_curve_and_coefficient_by_hand() -> None:
    c = curves(SCORE, OUTCOME, TREATED)
    # R_T − R_C·N_T/N_C (0 while N_C = 0):
    #   k=1: 0 (no held-out row yet)   k=2: 1 − 0·1/1 = 1   k=3: 2 − 0·2/1 = 2
    #   k=4: 2 − 1·2/2 = 1             k=5: 2 − 1·3/2 = 0.5 k=6: 2 − 1·3/3 = 1
    # scaled by n/N_T(n) = 6/3 = 2:
    np.testing.assert_allclose(c.qini, [0.0, 2.0, 4.0, 2.0, 1.0, 2.0])
    # Random targeting's line (k/n)·Q(n) = k/3: 1/3, 2/3, 1, 4/3, 5/3, 2. Differences:
    #   −1/3 + 4/3 + 3 + 2/3 − 2/3 + 0 = 4; their mean 4/6, per row / 6 = 1/9.
    assert qini_coefficient(c) == pytest.approx(1 / 9, abs=1e-12)


def test_uplift_curve_auuc_and_uplift_at_by_hand() -> None:
    c = curves(SCORE, OUTCOME, TREATED)
    # (R_T/N_T − R_C/N_C)·k (0 while an arm is empty):
    #   k=1: 0   k=2: (1/1 − 0/1)·2 = 2   k=3: (2/2 − 0/1)·3 = 3
    #   k=4: (2/2 − 1/2)·4 = 2   k=5: (2/3 − 1/2)·5 = 5/6   k=6: (2/3 − 1/3)·6 = 2
    np.testing.assert_allclose(c.uplift, [0.0, 2.0, 3.0, 2.0, 5 / 6, 2.0])
    # AUUC = mean(U)/n = (9 + 5/6)/6/6 = 59/216.
    assert auuc(c) == pytest.approx(59 / 216, abs=1e-12)
    # Top ceil(share·n) rows: 0.5 → 3 rows: 2/2 − 0/1 = 1; 0.7 → ceil(4.2) = 5 rows:
    # 2/3 − 1/2 = 1/6; all 6 rows: 2/3 − 1/3 = 1/3; 0.1 → 1 row, no held-out row: NaN.
    assert uplift_at(c, 0.5) == pytest.approx(1.0)
    assert uplift_at(c, 0.7) == pytest.approx(1 / 6)
    assert uplift_at(c, 1.0) == pytest.approx(1 / 3)
    assert np.isnan(uplift_at(c, 0.1))
    assert uplift_metrics(SCORE, OUTCOME, TREATED, capacity=0.7) == pytest.approx(
        {
            "qini": 1 / 9,
            "auuc": 59 / 216,
            "uplift_at_capacity": 1 / 6,
            "observed_uplift": 1 / 3,
        }
    )


def test_tied_scores_are_spread_evenly_by_hand() -> None:
    # Ranks 2 and 3 tie (0.8 and 0.7 both become 0.75): over the run, the sums move from
    # their values at k=1 (R_T 1, R_C 0, N_T 1, N_C 0) to those at k=3 (2, 0, 2, 1), half
    # way at k=2: R_T 1.5, R_C 0, N_T 1.5, N_C 0.5.
    tied = np.where(np.isin(SCORE, [0.8, 0.7]), 0.75, SCORE)
    c = curves(tied, OUTCOME, TREATED)
    np.testing.assert_allclose(c.r_t, [1, 1.5, 2, 2, 2, 2])
    np.testing.assert_allclose(c.n_t, [1, 1.5, 2, 2, 3, 3])
    np.testing.assert_allclose(c.n_c, [0, 0.5, 1, 2, 2, 3])
    # Q(2) = (1.5 − 0)·2 = 3; the differences from the line sum to 4 + (3 − 2) = 5: 5/36.
    np.testing.assert_allclose(c.qini, [0.0, 3.0, 4.0, 2.0, 1.0, 2.0])
    assert qini_coefficient(c) == pytest.approx(5 / 36, abs=1e-12)
    # U(2) = (1.5/1.5 − 0/0.5)·2 = 2: the uplift curve is unchanged here.
    np.testing.assert_allclose(c.uplift, [0.0, 2.0, 3.0, 2.0, 5 / 6, 2.0])


def test_weighted_sums_by_hand() -> None:
    # Weights by rank: 1, 2, 1, 1, 3, 1 (in input order below).
    weight = np.array([3.0, 1.0, 1.0, 1.0, 1.0, 2.0])
    c = curves(SCORE, OUTCOME, TREATED, weight)
    # Treated ranks 1, 3, 5 weigh 1, 1, 3 with outcomes 1, 1, 0: R_T = 2, N_T = 5.
    # Held-out ranks 2, 4, 6 weigh 2, 1, 1 with outcomes 0, 1, 0: R_C = 1, N_C = 4.
    assert (c.r_t[-1], c.n_t[-1], c.r_c[-1], c.n_c[-1]) == (2.0, 5.0, 1.0, 4.0)
    # Observed uplift 2/5 − 1/4 = 0.15; Q(n) = (2 − 1·5/4)·6/5 = 0.9.
    assert uplift_at(c, 1.0) == pytest.approx(0.15)
    assert c.qini[-1] == pytest.approx(0.9)


def test_uplift_at_a_capacity_takes_exactly_its_share_of_rows() -> None:
    # 0.07 × 100 is 7.000000000000001 in floating point: still the top 7 rows, not 8.
    # The top 7 rows are treated buyers and held-out non-buyers, the 8th a held-out buyer.
    treated = np.array([True, False] * 50)
    outcome = np.zeros(100)
    outcome[[0, 2, 4, 6]] = 1
    outcome[7] = 1
    score = -np.arange(100.0)
    c = curves(score, outcome, treated)
    # Top 7: treated rows 0, 2, 4, 6 all bought (4/4), held-out 1, 3, 5 none (0/3).
    assert uplift_at(c, 0.07) == pytest.approx(1.0)
    # Top 8 would add held-out row 7, a buyer: 4/4 − 1/4.
    assert uplift_at(c, 0.08) == pytest.approx(0.75)


def _planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A randomised trial with a heterogeneous effect τ(x) = 0.3·x, x ~ U(0, 1), base 0.3."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    tau = 0.3 * x
    treated = rng.random(n) < 0.5
    outcome = (rng.random(n) < 0.3 + treated * tau).astype(np.float64)
    return x, tau, treated, outcome


def test_random_ranking_has_no_qini_and_the_true_effect_a_clear_one() -> None:
    _, tau, treated, outcome = _planted(20_000, seed=4)
    rng = np.random.default_rng(99)
    random_qini = qini_coefficient(curves(rng.random(len(tau)), outcome, treated))
    oracle_qini = qini_coefficient(curves(tau, outcome, treated))
    reverse_qini = qini_coefficient(curves(-tau, outcome, treated))
    # Ranking by x, the top share f has mean effect 0.3·(1 − f/2): Q(fn)/n = 0.3f − 0.15f²,
    # the line 0.15f, their gap 0.15·f(1 − f), whose mean over f is 0.15/6 = 0.025. Over
    # 20 seeds the sample's Qini has a spread (sd) of about 0.0017, a random ranking's too.
    assert oracle_qini == pytest.approx(0.025, abs=0.006)
    assert abs(random_qini) < 0.006
    assert reverse_qini == pytest.approx(-0.025, abs=0.006)


def test_all_equal_scores_do_not_depend_on_the_row_order() -> None:
    _, _, treated, outcome = _planted(2_000, seed=5)
    flat = np.full(len(outcome), 0.5)
    first = curves(flat, outcome, treated)
    order = np.random.default_rng(1).permutation(len(outcome))
    again = curves(flat[order], outcome[order], treated[order])
    # One run of ties: the curve is random targeting's straight line, whatever the order.
    assert qini_coefficient(first) == pytest.approx(0.0, abs=1e-12)
    assert qini_coefficient(again) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(first.qini, again.qini, atol=1e-9)
    np.testing.assert_allclose(first.uplift, again.uplift, atol=1e-9)
    # Sorting the treated rows first would, with a stable sort and no tie spreading, give a
    # large Qini: the ties must hide the input order.
    put_treated_first = np.argsort(~treated, kind="stable")
    sorted_rows = curves(flat, outcome[put_treated_first], treated[put_treated_first])
    assert qini_coefficient(sorted_rows) == pytest.approx(0.0, abs=1e-12)


def test_partly_tied_scores_do_not_depend_on_the_row_order() -> None:
    x, _, treated, outcome = _planted(3_000, seed=6)
    coarse = np.round(x, 1)  # 11 runs of tied scores
    q = qini_coefficient(curves(coarse, outcome, treated))
    for seed in (1, 2, 3):
        order = np.random.default_rng(seed).permutation(len(x))
        permuted = qini_coefficient(curves(coarse[order], outcome[order], treated[order]))
        assert permuted == pytest.approx(q, abs=1e-12)
    assert q > 0.01


def test_arm_weights_are_inverse_treated_shares() -> None:
    treated = np.array([True, True, True, False, True, False])
    # One share for all rows: 4 of 6 sent, e = 2/3: 1/e = 1.5, 1/(1 − e) = 3.
    np.testing.assert_allclose(arm_weights(treated), [1.5, 1.5, 1.5, 3.0, 1.5, 3.0])
    # Per action: "a" has 3 of 4 sent (e = 3/4: 4/3 and 4), "b" 1 of 2 (e = 1/2: 2 and 2).
    actions = np.array(["a", "a", "a", "a", "b", "b"])
    np.testing.assert_allclose(arm_weights(treated, actions), [4 / 3, 4 / 3, 4 / 3, 4, 2, 2])
    # An action sent every time: its treated rows weigh 1 (e = 1).
    np.testing.assert_allclose(arm_weights(np.array([True, True]), np.array(["c", "c"])), [1, 1])
    # Each action's arms then weigh the same in total: a 3·4/3 = 1·4, b 1·2 = 1·2.
    w = arm_weights(treated, actions)
    for a in ("a", "b"):
        mine = actions == a
        assert w[mine & treated].sum() == pytest.approx(w[mine & ~treated].sum())


def test_bootstrap_intervals_hold_the_point_value_and_repeat_by_seed() -> None:
    _, tau, treated, outcome = _planted(4_000, seed=7)
    random_score = np.random.default_rng(8).random(len(tau))
    scores = {"oracle": tau, "random": random_score}

    def run(seed: int) -> pd.DataFrame:
        return bootstrap_intervals(
            scores, outcome, treated, capacity=0.2, resamples=60, seed=seed, ratio_to="oracle"
        )

    table = run(3)
    metrics = ["qini", "auuc", "uplift_at_capacity", "observed_uplift"]
    assert sorted(zip(table["ranking"], table["metric"], strict=True)) == sorted(
        [("oracle", m) for m in metrics] + [("random", m) for m in [*metrics, "qini_ratio"]]
    )
    # The point values are the metrics of the full sample.
    for name, score in scores.items():
        point = uplift_metrics(score, outcome, treated, capacity=0.2)
        mine = table[table["ranking"] == name].set_index("metric")["value"]
        for metric in metrics:
            assert mine[metric] == pytest.approx(point[metric])
    ratio = table[(table["ranking"] == "random") & (table["metric"] == "qini_ratio")].iloc[0]
    oracle_qini = uplift_metrics(tau, outcome, treated)["qini"]
    random_qini = uplift_metrics(random_score, outcome, treated)["qini"]
    assert ratio["value"] == pytest.approx(random_qini / oracle_qini)
    assert (table["low"] <= table["value"]).all()
    assert (table["value"] <= table["high"]).all()
    assert (table["low"] < table["high"]).all()
    # The oracle's Qini interval lies above 0; the random ranking's straddles it.
    oracle = table[(table["ranking"] == "oracle") & (table["metric"] == "qini")].iloc[0]
    rand = table[(table["ranking"] == "random") & (table["metric"] == "qini")].iloc[0]
    assert oracle["low"] > 0
    assert rand["low"] < 0 < rand["high"]
    # The same seed gives the same intervals; another seed other ones.
    pd.testing.assert_frame_equal(run(3), table)
    other = run(4)
    pd.testing.assert_series_equal(other["value"], table["value"])
    assert not np.allclose(other["low"], table["low"])


def test_arm_difference_by_hand() -> None:
    """Sent 1, 0, 1, 1 (mean 0.75, variance 0.25); held out 0, 1, 0 (mean 1/3, variance
    1/3): effect 5/12, standard error sqrt(0.25/4 + (1/3)/3)."""
    y = np.array([1, 0, 1, 1, 0, 1, 0], dtype=float)
    treated = np.array([1, 1, 1, 1, 0, 0, 0], dtype=bool)
    effect, low, high = arm_difference(y, treated, level=0.9)
    se = np.sqrt(0.25 / 4 + (1 / 3) / 3)
    assert effect == pytest.approx(5 / 12)
    assert low == pytest.approx(5 / 12 - 1.6448536 * se, rel=1e-6)
    assert high == pytest.approx(5 / 12 + 1.6448536 * se, rel=1e-6)
    assert all(np.isnan(arm_difference(y[:5], treated[:5])))


def _resampled_the_old_way(scores, outcome, treated, weight, resamples, seed, capacity=0.2):
    """Each resample's metrics from its drawn rows, ranked afresh (the loop the bootstrap
    ran before it reused one ranking per score)."""
    rng = np.random.default_rng(seed)
    arms = [np.flatnonzero(treated), np.flatnonzero(~treated)]
    out = []
    for _ in range(resamples):
        rows = np.concatenate([rng.choice(a, size=len(a), replace=True) for a in arms])
        out.append(
            {
                name: uplift_metrics(s[rows], outcome[rows], treated[rows], weight[rows], capacity)
                for name, s in scores.items()
            }
        )
    return out


@pytest.mark.parametrize(("ties", "missing"), [(False, False), (False, True), (True, True)])
def test_a_resample_ranked_once_has_the_curves_of_its_rows_ranked_afresh(
    ties: bool, missing: bool
) -> None:
    """Scores with ties (or missing, which tie), and without any: only a row's own copies
    tie, and the ranking knows it."""
    _, tau, treated, outcome = _planted(2_000, seed=5)
    score = np.round(tau, 1) if ties else tau.copy()
    if missing:
        score[:50] = np.nan
    ranking = Ranking.of(score, outcome.astype(float), treated, treated * 1.0)
    # Rounded to a tenth, most rows tie: their resamples find the runs afresh.
    assert ranking.mostly_tied == ties
    assert (ranking.run is not None) == (ties or missing)
    weight = arm_weights(treated)
    rng = np.random.default_rng(11)
    counts = resample_counts(rng, treated)
    rows = np.repeat(np.arange(len(counts)), counts)
    assert len(rows) == len(treated)
    assert counts[treated].sum() == treated.sum()
    mine = Ranking.of(score, outcome.astype(float), treated, weight).resampled(counts)
    afresh = curves(score[rows], outcome[rows], treated[rows], weight[rows])
    for name in ("r_t", "r_c", "n_t", "n_c"):
        np.testing.assert_allclose(getattr(mine, name), getattr(afresh, name), rtol=1e-12)


def test_bootstrap_intervals_equal_those_of_each_resample_ranked_afresh() -> None:
    _, tau, treated, outcome = _planted(3_000, seed=9)
    scores = {"model": np.round(tau, 2), "random": np.random.default_rng(2).random(len(tau))}
    weight = arm_weights(treated)
    table = bootstrap_intervals(scores, outcome, treated, weight, resamples=40, seed=5)
    draws = _resampled_the_old_way(scores, outcome, treated, weight, resamples=40, seed=5)
    for row in table.itertuples():
        values = np.array([d[row.ranking][row.metric] for d in draws])
        values = values[np.isfinite(values)]
        low, high = np.quantile(values, [0.05, 0.95])
        assert row.low == pytest.approx(low, rel=1e-12)
        assert row.high == pytest.approx(high, rel=1e-12)
