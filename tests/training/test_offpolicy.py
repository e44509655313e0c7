"""Off-policy estimators against synthetic logs whose true policy values are known."""

from __future__ import annotations

import numpy as np
import pytest

from training.offpolicy import evaluate_policy, greedy, uniform

ACTIONS = 5


def synthetic_logs(n: int, seed: int):
    """Contexts with known expected rewards, logged by a softmax policy with propensities."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    # Expected reward of each action varies with the context.
    slopes = np.linspace(-1.0, 1.0, ACTIONS)
    q = 1.0 / (1.0 + np.exp(-(slopes[None, :] * x[:, None] + np.linspace(-1, 0.5, ACTIONS))))
    logits = 0.8 * np.arange(ACTIONS)[None, :] * np.sign(x)[:, None]
    logging = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    action = np.array([rng.choice(ACTIONS, p=row) for row in logging])
    reward = (rng.random(n) < q[np.arange(n), action]).astype(float)
    return q, logging, action, reward


def test_estimators_recover_known_policy_values_within_their_intervals() -> None:
    q, logging, action, reward = synthetic_logs(20_000, seed=3)
    n = len(action)
    propensity = logging[np.arange(n), action]
    targets = {
        "best": greedy(q),
        "uniform": uniform(np.ones_like(q, dtype=bool)),
        "first": np.eye(ACTIONS)[np.zeros(n, dtype=int)],
    }
    # A deliberately wrong outcome model: DR must still be unbiased through the weights.
    wrong_q = np.full_like(q, 0.5)
    for name, target in targets.items():
        truth = float((target * q).sum(axis=1).mean())
        value = evaluate_policy(target, action, propensity, reward, wrong_q)
        low, high = value.interval("ips")
        assert low <= truth <= high, (name, truth, value)
        low, high = value.interval("dr")
        assert low <= truth <= high, (name, truth, value)
        assert abs(value.snips - truth) < 0.03, (name, truth, value.snips)


def test_doubly_robust_with_a_good_outcome_model_is_tighter_than_ips() -> None:
    q, logging, action, reward = synthetic_logs(5_000, seed=5)
    n = len(action)
    value = evaluate_policy(greedy(q), action, logging[np.arange(n), action], reward, q)
    assert value.dr_se < value.ips_se
    assert value.direct == pytest.approx(float(q.max(axis=1).mean()))


def test_logging_policy_valued_by_ips_is_the_mean_reward() -> None:
    _, logging, action, reward = synthetic_logs(2_000, seed=7)
    n = len(action)
    value = evaluate_policy(logging, action, logging[np.arange(n), action], reward)
    assert value.ips == pytest.approx(reward.mean())
    assert value.matched == n


def test_greedy_respects_the_allowed_mask_and_uniform_spreads_over_it() -> None:
    values = np.array([[3.0, 2.0, 1.0], [1.0, 5.0, 0.0]])
    allowed = np.array([[False, True, True], [False, False, False]])
    chosen = greedy(values, allowed)
    # Row 0: the best action is masked; row 1: nothing allowed falls back to all actions.
    np.testing.assert_array_equal(chosen, [[0, 1, 0], [0, 1, 0]])
    spread = uniform(allowed)
    np.testing.assert_allclose(spread, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"propensity": np.array([0.0, 0.5])}, "propensity must lie in"),
        ({"logged_action": np.array([0, 7])}, "must index the 2 actions"),
        ({"target": np.array([[0.5, 0.4], [0.5, 0.5]])}, "must sum to 1"),
        ({"reward": np.array([1.0])}, "must have 2 too"),
    ],
)
def test_bad_inputs_are_named(change, message) -> None:
    inputs = {
        "target": np.array([[0.5, 0.5], [1.0, 0.0]]),
        "logged_action": np.array([0, 1]),
        "propensity": np.array([0.5, 0.5]),
        "reward": np.array([1.0, 0.0]),
    }
    inputs.update(change)
    with pytest.raises(ValueError, match=message):
        evaluate_policy(**inputs)
