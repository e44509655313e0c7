"""Off-policy evaluation: the value a new policy would have earned, from logs of another.

A logging policy chose action a_i for context x_i with known probability p_i (the logged
propensity) and earned reward r_i. A target policy π puts probability π(a | x_i) on each
action. With importance weights w_i = π(a_i | x_i) / p_i:

- IPS (inverse propensity scoring): mean(w_i · r_i). Unbiased when every action π takes
  has p > 0; its variance grows with the weights.
- SNIPS (self-normalised IPS): Σ w_i r_i / Σ w_i. Slightly biased, far less variance.
- DR (doubly robust): mean(Σ_a π(a | x_i) q̂(x_i, a) + w_i (r_i − q̂(x_i, a_i))), with q̂ an
  outcome model. Unbiased if either the propensities or q̂ are right; usually the tightest.

Standard errors are the sample standard deviation of the per-row terms over √n (the rows
are independent decisions), and the intervals are normal: mean ± 1.96 · se.

The action space is the same ordered list of A candidate actions for every row; policies and
outcome models are (n, A) matrices. Actions a policy may not take carry probability 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class PolicyValue:
    """Estimated value per decision of one target policy.

    Attributes:
        ips: Inverse propensity scoring estimate.
        ips_se: Its standard error.
        snips: Self-normalised IPS estimate.
        dr: Doubly robust estimate (NaN without an outcome model).
        dr_se: Its standard error.
        direct: The outcome model's own estimate, mean Σ_a π(a|x) q̂(x, a) (NaN without one).
        matched: Rows whose logged action the target policy could have taken (w > 0).
        effective_n: Effective sample size of the weights, (Σw)² / Σw².
        rows: Decisions evaluated.
    """

    ips: float
    ips_se: float
    snips: float
    dr: float
    dr_se: float
    direct: float
    matched: int
    effective_n: float
    rows: int

    def interval(self, estimator: str = "dr") -> tuple[float, float]:
        """95% normal confidence interval of the "ips" or "dr" estimate."""
        value, se = (self.dr, self.dr_se) if estimator == "dr" else (self.ips, self.ips_se)
        return value - Z_95 * se, value + Z_95 * se

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """Flat metrics for a tracking run."""
        low, high = self.interval("dr")
        return {
            f"{prefix}_ips": self.ips,
            f"{prefix}_ips_se": self.ips_se,
            f"{prefix}_snips": self.snips,
            f"{prefix}_dr": self.dr,
            f"{prefix}_dr_se": self.dr_se,
            f"{prefix}_dr_low": low,
            f"{prefix}_dr_high": high,
            f"{prefix}_direct": self.direct,
            f"{prefix}_matched": float(self.matched),
            f"{prefix}_effective_n": self.effective_n,
        }


def _se(terms: np.ndarray) -> float:
    n = terms.size
    return float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan


def evaluate_policy(
    target: np.ndarray,
    logged_action: np.ndarray,
    propensity: np.ndarray,
    reward: np.ndarray,
    q_hat: np.ndarray | None = None,
) -> PolicyValue:
    """Estimate a target policy's value per decision from logged decisions.

    Args:
        target: (n, A) probabilities of the target policy; rows sum to 1.
        logged_action: (n,) index of the logged action in 0..A-1.
        propensity: (n,) probability the logging policy gave the logged action.
        reward: (n,) observed reward of the logged action.
        q_hat: (n, A) predicted expected reward of every action, for DR.

    Returns:
        The estimates.

    Raises:
        ValueError: Shapes disagree, an action index is out of range, a propensity is not in
            (0, 1], or a policy row does not sum to 1.
    """
    target = np.asarray(target, dtype=np.float64)
    logged_action = np.asarray(logged_action)
    propensity = np.asarray(propensity, dtype=np.float64)
    reward = np.asarray(reward, dtype=np.float64)
    n, actions = target.shape
    if logged_action.shape != (n,) or propensity.shape != (n,) or reward.shape != (n,):
        raise ValueError(
            f"target has {n} rows; logged_action, propensity and reward must have {n} too "
            f"(got {logged_action.shape}, {propensity.shape}, {reward.shape})"
        )
    if n == 0:
        raise ValueError("no logged decisions to evaluate")
    if logged_action.min() < 0 or logged_action.max() >= actions:
        raise ValueError(f"logged_action must index the {actions} actions")
    if not ((propensity > 0) & (propensity <= 1)).all():
        raise ValueError("propensity must lie in (0, 1]")
    if not np.allclose(target.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("each row of the target policy must sum to 1")
    rows = np.arange(n)
    weight = target[rows, logged_action] / propensity
    ips_terms = weight * reward
    weight_sum = weight.sum()
    snips = float(ips_terms.sum() / weight_sum) if weight_sum > 0 else math.nan
    effective_n = float(weight_sum**2 / np.square(weight).sum()) if weight_sum > 0 else 0.0
    dr = dr_se = direct = math.nan
    if q_hat is not None:
        q_hat = np.asarray(q_hat, dtype=np.float64)
        if q_hat.shape != target.shape:
            raise ValueError(f"q_hat must have the target's shape {target.shape}")
        baseline = (target * q_hat).sum(axis=1)
        dr_terms = baseline + weight * (reward - q_hat[rows, logged_action])
        dr, dr_se, direct = float(dr_terms.mean()), _se(dr_terms), float(baseline.mean())
    return PolicyValue(
        ips=float(ips_terms.mean()),
        ips_se=_se(ips_terms),
        snips=snips,
        dr=dr,
        dr_se=dr_se,
        direct=direct,
        matched=int((weight > 0).sum()),
        effective_n=effective_n,
        rows=n,
    )


def greedy(values: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """The deterministic policy taking each row's best allowed action (first on ties).

    A generic target for the estimators. The next-best-offer policy, which the service
    serves, is `models.next_best_offer.choose`: the same best allowed action, except that
    an offer worth no more than showing nothing (its "none" action) is never taken.

    Args:
        values: (n, A) expected reward of each action.
        allowed: (n, A) booleans; a row with no allowed action falls back to all actions.

    Returns:
        (n, A) one-hot probabilities.
    """
    values = np.asarray(values, dtype=np.float64)
    masked = values.copy()
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        none_allowed = ~allowed.any(axis=1)
        masked = np.where(allowed | none_allowed[:, None], masked, -np.inf)
    masked = np.where(np.isnan(masked), -np.inf, masked)
    choice = masked.argmax(axis=1)
    out = np.zeros_like(values)
    out[np.arange(len(values)), choice] = 1.0
    return out


def uniform(allowed: np.ndarray) -> np.ndarray:
    """The policy choosing uniformly among each row's allowed actions (all when none is)."""
    allowed = np.asarray(allowed, dtype=bool)
    allowed = allowed | ~allowed.any(axis=1, keepdims=True)
    return allowed / allowed.sum(axis=1, keepdims=True)
