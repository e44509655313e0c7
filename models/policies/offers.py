"""The next-best-offer policy, defined once: which offer, if any, a decision shows.

Score every allowed candidate action, take the highest expected value p(accept) × value,
and show nothing when no offer is worth more than the customer buying anyway; never a
category the customer returned. Training values `choose` (its first choice) off-policy
against the baselines here (`popularity_policy`, and the random policy over the allowed
offers), and the service answers the first k of `ranked_offers`, so the policy valued is
the one served.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from models.next_best_offer import NONE


def no_offer_values(expected: np.ndarray) -> np.ndarray:
    """The value of showing nothing from its expected values: 0 where unknown (NaN), and
    infinities as the largest finite values (`np.nan_to_num(expected, nan=0.0)`, without its
    cost of about 10 µs a call on the request path)."""
    largest = np.finfo(np.float64).max
    values = np.asarray(expected, dtype=np.float64)
    return np.where(np.isnan(values), 0.0, np.clip(values, -largest, largest))


def allowed_mask(returns_total: np.ndarray, offer_type: np.ndarray) -> np.ndarray:
    """Booleans, one per candidate: whether the policy may take it. Never a category the
    customer returned (`category_returns_total` > 0; missing counts as none returned);
    "none" is always allowed."""
    returns = np.asarray(returns_total, dtype=np.float64)
    return (returns <= 0) | np.isnan(returns) | (np.asarray(offer_type, dtype=object) == NONE)


def allowed_actions(candidate_frame: pd.DataFrame, n: int, a: int) -> np.ndarray:
    """(n, A) booleans: `allowed_mask` of every candidate in a `candidates` frame."""
    returns = candidate_frame["category_returns_total"].fillna(0).to_numpy(np.float64)
    return allowed_mask(returns, candidate_frame["offer_type"].to_numpy()).reshape(n, a)


def ranked_offers(expected: np.ndarray, allowed: np.ndarray, none: np.ndarray) -> np.ndarray:
    """The policy's ranking of each decision's offers: the allowed offers worth more than
    showing nothing, by expected value, best first (first in action order on ties).

    Showing nothing is one of the options: its value is the customer buying anyway (the
    expected value of the "none" action; 0 where that is unknown). An offer worth no more
    than that is never ranked, so a decision where showing nothing is best ranks none. This
    is the one definition of the policy: off-policy evaluation values its first choice
    (`choose`) and the service answers its first k, so the policy valued is the one served.

    Args:
        expected: (n, A) expected value of every candidate action (p(accept) × value).
        allowed: (n, A) booleans from `allowed_mask` / `allowed_actions`.
        none: (A,) or (n, A) booleans marking the "none" action (one per decision).

    Returns:
        (n, A) action indices, best first, padded with -1 after the last offer worth showing.
    """
    expected = np.atleast_2d(np.asarray(expected, dtype=np.float64))
    allowed = np.broadcast_to(np.asarray(allowed, dtype=bool), expected.shape)
    none = np.broadcast_to(np.asarray(none, dtype=bool), expected.shape)
    if not (none.sum(axis=1) == 1).all():
        raise ValueError('each decision needs exactly one "none" action')
    no_offer = no_offer_values(expected[none])[:, None]
    worth = allowed & ~none & np.isfinite(expected) & (expected > no_offer)
    score = np.where(worth, expected, -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")
    return np.where(np.take_along_axis(worth, order, axis=1), order, -1)


def choose(expected: np.ndarray, allowed: np.ndarray, none: np.ndarray) -> np.ndarray:
    """The policy as (n, A) one-hot probabilities, for off-policy evaluation: the first of
    `ranked_offers`, else "none" (showing nothing)."""
    expected = np.atleast_2d(np.asarray(expected, dtype=np.float64))
    none = np.broadcast_to(np.asarray(none, dtype=bool), expected.shape)
    first = ranked_offers(expected, allowed, none)[:, 0]
    choice = np.where(first >= 0, first, none.argmax(axis=1))
    out = np.zeros_like(expected)
    out[np.arange(len(expected)), choice] = 1.0
    return out


def popularity_policy(
    candidate_frame: pd.DataFrame, allowed: np.ndarray, ranking: list[str], n: int, a: int
) -> np.ndarray:
    """A plain recommendation of the most popular allowed category, per decision."""
    plain = (candidate_frame["offer_type"].to_numpy() == "recommendation").reshape(n, a)
    category = candidate_frame["category"].to_numpy(object).reshape(n, a)
    rank = {c: i for i, c in enumerate(ranking)}
    score = np.vectorize(lambda c: -rank.get(c, len(rank)), otypes=[np.float64])(category)
    usable = plain & allowed
    score = np.where(usable, score, -np.inf)
    choice = score.argmax(axis=1)
    policy = np.zeros((n, a))
    policy[np.arange(n), choice] = 1.0
    return policy


def best_sellers(tables: Mapping[str, pa.Table], before: pd.Timestamp) -> list[str]:
    """Categories by order lines of orders placed before `before`, best-selling first."""
    orders = tables["orders"].select(["order_id", "order_ts"]).to_pandas()
    orders = orders[pd.to_datetime(orders["order_ts"], utc=True) < before]
    items = tables["order_items"].select(["order_id", "product_id"]).to_pandas()
    products = tables["products"].select(["product_id", "category"]).to_pandas()
    lines = items.merge(orders, on="order_id").merge(products, on="product_id")
    counts = lines["category"].value_counts()
    counts = counts.reindex(sorted(products["category"].unique()), fill_value=0)
    return list(counts.sort_values(ascending=False, kind="stable").index)
