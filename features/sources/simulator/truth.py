"""The true probability of repurchase within 90 days, at monthly snapshots.

With k the customer's last order at or before the snapshot t, λ its order rate, q_k the churn
probability after order k, r_k the time its experience resolved and Λ(a, b) = S(b) − S(a)
the seasonal clock between a and b:

- t < r_k (the experience is still running): p = (1 − q_k)·(1 − exp(−λ·Λ(r_k, t + 90)));
- t ≥ r_k: the customer is alive with posterior
  a = (1 − q_k)e^{−λΛ(r_k, t)} / ((1 − q_k)e^{−λΛ(r_k, t)} + q_k), and p = a·(1 − e^{−λΛ(t, t+90)}).

This conditions on the latent rate and churn probability, so it is the best achievable score.
Outreach sent after an order's experience resolved resets the clock: from its send time s on,
(r_k, q_k) are replaced by (s, the churned probability right after it), see `outreach`. The
snapshot conditions on the outreach sent by t (and, like q_k itself, on the order's pending
outreach); it does not anticipate outreach still to come within the window.
"""

from __future__ import annotations

import numpy as np

from features.sources.simulator.offers import KEY_SCALE
from features.sources.simulator.timeline import Timeline

WINDOW_DAYS = 90


def repurchase_truth(
    timeline: Timeline,
    n_customers: int,
    order_customer: np.ndarray,
    order_t: np.ndarray,
    order_r: np.ndarray,
    order_q: np.ndarray,
    order_rate: np.ndarray,
    resets: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """p_repurchase_90d per (customer with an earlier order, month-start snapshot).

    Args:
        timeline: The calendar (seasonal clock).
        n_customers: Customers in the chunk.
        order_customer: Customer per order, sorted by (customer, time).
        order_t: Order times, days.
        order_r: When each order's experience resolved, days.
        order_q: Churn probability after each order.
        order_rate: λ per customer.
        resets: Outreach after a decision: order, t, q (churned probability from t on).

    Returns:
        customer, snapshot (day offset), p; sorted by (customer, snapshot). Only snapshots
        whose 90-day window ends by the horizon.
    """
    keys = order_customer * KEY_SCALE + order_t
    everyone = np.arange(n_customers)
    out_c, out_s, out_p = [], [], []
    s_r_all = timeline.season_clock(order_r)
    if resets is not None and resets["order"].size:
        sort = np.lexsort((resets["t"], resets["order"]))
        reset_order, reset_t, reset_q = (resets[name][sort] for name in ("order", "t", "q"))
        reset_keys = reset_order * KEY_SCALE + reset_t
        s_reset_all = timeline.season_clock(reset_t)
    else:
        reset_order = None
    for snapshot in timeline.month_starts:
        if snapshot + WINDOW_DAYS > timeline.days or order_customer.size == 0:
            break
        last = np.searchsorted(keys, everyone * KEY_SCALE + snapshot, side="right") - 1
        has = (last >= 0) & (order_customer[np.maximum(last, 0)] == everyone)
        customer = everyone[has]
        k = last[has]
        lam = order_rate[customer]
        q = order_q[k]
        s_r = s_r_all[k]
        s_t = timeline.cum_season[snapshot]
        s_end = timeline.cum_season[snapshot + WINDOW_DAYS]
        running = snapshot < order_r[k]
        if reset_order is not None:
            latest = np.searchsorted(reset_keys, k * KEY_SCALE + snapshot, side="right") - 1
            here = np.maximum(latest, 0)
            applies = (latest >= 0) & (reset_order[here] == k) & (reset_t[here] <= snapshot)
            q = np.where(applies, reset_q[here], q)
            s_r = np.where(applies, s_reset_all[here], s_r)
        p_running = (1.0 - q) * -np.expm1(-lam * np.maximum(s_end - s_r, 0.0))
        survive = (1.0 - q) * np.exp(-lam * np.maximum(s_t - s_r, 0.0))
        alive = survive / (survive + q)
        p_resolved = alive * -np.expm1(-lam * (s_end - s_t))
        out_c.append(customer)
        out_s.append(np.full(customer.size, snapshot))
        out_p.append(np.where(running, p_running, p_resolved))
    if not out_c:
        empty = np.zeros(0, dtype=np.int64)
        return {"customer": empty, "snapshot": empty, "p": np.zeros(0)}
    customer = np.concatenate(out_c)
    snapshot = np.concatenate(out_s)
    p = np.concatenate(out_p)
    sort = np.lexsort((snapshot, customer))
    return {"customer": customer[sort], "snapshot": snapshot[sort], "p": p[sort]}
