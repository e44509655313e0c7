"""Offers: exposure (tracking-page views, monthly outreach), the logging policy, and the true
acceptance model that later code can evaluate for any candidate action.

Acceptance means "bought the offered category within `window_days`". Without an offer the
customer buys the category anyway with p_anyway (order rate × affinity × loyalty); an offer
adds an incremental chance: p_accept = p_anyway + (1 − p_anyway)·p_incremental, where
p_incremental rises with affinity and discount × price sensitivity and falls while the tracked
parcel is late and when the customer has returned that category before. The control arm
("none") records whether the customer bought anyway, for the category the policy would have
favoured: the customer's most-ordered category at decision time (written to
`_truth/offers.parquet` as `reference_category`). Accepted offers are add-on purchases
recorded in `offers` only: they are not orders and do not move the churn clock. A price change
(`params.PriceChange`) moves the offered price, and with it the effective discount customers
weigh and the revenue.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

import numpy as np

from features.sources.simulator.params import DEFAULT_PARAMS, PriceChange, SimulatorParams
from features.sources.simulator.population import Population
from features.sources.simulator.world import World, draw_categorical

# Scale that turns (customer index, day) into one sortable float key: days stay below it.
KEY_SCALE = 4096.0
PLACEMENT_TRACKING, PLACEMENT_OUTREACH = 0, 1
CHANNEL_WEB = 0  # offers' channel vocabulary: web, email, sms, voice


def category_codes(category: Any, params: SimulatorParams = DEFAULT_PARAMS) -> np.ndarray:
    """Category indices for names (or indices) in `category`; -1 for missing or unknown."""
    values = np.asarray(category)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    names = np.asarray(params.category_names)
    by_name = np.argsort(names)
    sorted_names = names[by_name]
    # None and NaN become "None"/"nan", which match no category.
    text = values.astype(str) if values.dtype.kind != "U" else values
    position = np.clip(np.searchsorted(sorted_names, text), 0, len(names) - 1)
    found = sorted_names[position] == text
    return np.where(found, by_name[position], -1).astype(np.int64)


Latent = Mapping[str, Any]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _latent(latent: Latent, name: str) -> np.ndarray:
    return np.asarray(latent[name], dtype=np.float64)


def _affinity(latent: Latent, code: np.ndarray, params: SimulatorParams) -> np.ndarray:
    columns = [_latent(latent, f"affinity_{name}") for name in params.category_names]
    matrix = np.stack(np.broadcast_arrays(*columns), axis=-1)
    shape = np.broadcast_shapes(matrix.shape[:-1], code.shape)
    matrix = np.broadcast_to(matrix, (*shape, matrix.shape[-1]))
    index = np.broadcast_to(np.maximum(code, 0), shape)[..., None]
    return np.take_along_axis(matrix, index, axis=-1)[..., 0]


def accept_probs(
    affinity: np.ndarray,
    order_rate: np.ndarray,
    loyalty: np.ndarray,
    price_sensitivity: np.ndarray,
    control: np.ndarray,
    discount: np.ndarray,
    shipment_late: np.ndarray,
    returned: np.ndarray,
    params: SimulatorParams = DEFAULT_PARAMS,
    price_factor: np.ndarray | float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The acceptance mechanism on plain arrays: (p_accept, p_anyway).

    Args:
        affinity: The customer's affinity with the offered (or reference) category.
        order_rate: λ, orders per average day.
        loyalty: Latent loyalty.
        price_sensitivity: Response to discounts.
        control: The action is "none" (nothing shown).
        discount: Discount fraction.
        shipment_late: The tracked parcel is past its promise at the offer time.
        returned: The customer returned this category before the offer.
        params: Parameters the data were simulated with.
        price_factor: The offered items' price over their usual price (`price_factors`).
    """
    op = params.offers
    hazard = (
        op.window_days
        * op.anyway_scale
        * order_rate
        * affinity
        * np.exp(op.anyway_loyalty * loyalty)
    )
    p_anyway = -np.expm1(-hazard)
    logit = (
        op.inc_base
        + op.inc_affinity * affinity
        # The effective discount against the usual price, 1 − factor·(1 − discount), written
        # so that it is the discount itself, bit for bit, where the price did not move.
        + op.inc_discount * (discount + (1.0 - price_factor) * (1.0 - discount)) * price_sensitivity
        - op.inc_late * shipment_late
        - op.inc_returned * returned
    )
    p_accept = np.where(control, p_anyway, p_anyway + (1.0 - p_anyway) * _sigmoid(logit))
    return p_accept, p_anyway


def true_anyway_prob(
    latent: Latent, category: Any, params: SimulatorParams = DEFAULT_PARAMS
) -> np.ndarray:
    """True probability that the customer buys `category` within the window without an offer.

    Args:
        latent: One customer's latent traits (a row of `_truth/customer_latent.parquet` as a
            pandas Series or dict) or a frame / mapping of aligned columns: `order_rate`,
            `loyalty`, `price_sensitivity`, `affinity_<category>`.
        category: Category name(s) or index(es), aligned with (or broadcast against) `latent`.
        params: Parameters the data were simulated with.

    Returns:
        Probabilities; NaN where the category is missing or unknown.
    """
    return true_accept_prob(latent, category, "none", 0.0, False, None, params)


def true_accept_prob(
    latent: Latent,
    category: Any,
    offer_type: Any,
    discount: Any,
    shipment_late: Any,
    returned_categories: Any = None,
    params: SimulatorParams = DEFAULT_PARAMS,
    price_factor: Any = 1.0,
) -> np.ndarray:
    """True probability that an offer is accepted (the category bought within the window).

    This is the mechanism the simulator draws acceptance from (`accept_probs`), vectorised
    over numpy arrays, so the oracle value of any candidate action can be computed, not only
    the logged one.

    Args:
        latent: One customer's latent traits or aligned columns (see `true_anyway_prob`).
        category: Offered category name(s) or index(es). For offer type "none" pass the
            control's reference category (the customer's most-ordered category at decision
            time, `_truth/offers.parquet` column `reference_category`); the control's
            acceptance is buying it anyway.
        offer_type: "discount", "recommendation" or "none" (array-like of them).
        discount: Discount fraction (0 for recommendations and none).
        shipment_late: Whether the tracked parcel is past its promise at the offer time
            (False for outreach).
        returned_categories: Whether the customer returned the category before the offer:
            a boolean per row, or a boolean matrix (rows, categories) from which the row's
            category is taken. None means never.
        params: Parameters the data were simulated with.
        price_factor: The offered price over the usual price at the decision: 1 unless a
            `params.PriceChange` was in force (`price_factors`).

    Returns:
        Probabilities; NaN where the category is missing or unknown.
    """
    code = category_codes(category, params)
    affinity = _affinity(latent, code, params)
    p_accept, _ = accept_probs(
        affinity,
        _latent(latent, "order_rate"),
        _latent(latent, "loyalty"),
        _latent(latent, "price_sensitivity"),
        np.asarray(offer_type) == "none",
        np.asarray(discount, dtype=np.float64),
        np.asarray(shipment_late, dtype=bool),
        _returned(returned_categories, code),
        params,
        np.asarray(price_factor, dtype=np.float64),
    )
    return np.where(code >= 0, p_accept, np.nan)


def price_factors(params: SimulatorParams, start: date, t: np.ndarray) -> np.ndarray:
    """The offered items' price over their usual price at times `t` (days since `start`):
    the product of the factors of the price changes (`params.PriceChange`) begun by then."""
    factor = np.ones(np.shape(t))
    for shock in params.shocks:
        if isinstance(shock, PriceChange):
            factor = np.where(t >= (shock.start - start).days, factor * shock.factor, factor)
    return factor


def _returned(returned_categories: Any, code: np.ndarray) -> np.ndarray:
    if returned_categories is None:
        return np.zeros(code.shape, dtype=bool)
    values = np.asarray(returned_categories, dtype=bool)
    if values.ndim == code.ndim + 1:
        index = np.maximum(code, 0)[..., None]
        return np.take_along_axis(values, index, axis=-1)[..., 0]
    return values


_OFFER_FIELDS = {
    "customer": np.int64,
    "order": np.int64,
    "t": np.float64,
    "placement": np.int64,
    "channel": np.int64,
    "action": np.int64,
    "offer_type": np.int64,
    "category": np.int64,
    "discount": np.float64,
    "propensity": np.float64,
    "accepted_t": np.float64,
    "revenue": np.float64,
    "p_accept": np.float64,
    "p_anyway": np.float64,
    "reference_category": np.int64,
}


def simulate_offers(
    rng: np.random.Generator,
    world: World,
    pop: Population,
    orders: dict[str, np.ndarray],
    lines: dict[str, np.ndarray],
    shipments: dict[str, np.ndarray],
    returns: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Log every offer decision of the chunk with its propensity and true probabilities.

    Args:
        rng: Random stream of the chunk.
        world: Shared context.
        pop: The chunk's customers.
        orders: Orders sorted by (customer, time): customer, t.
        lines: Order lines: order, category.
        shipments: Per order: shipped, promised, delivered, lost, late.
        returns: order, category, requested.

    Returns:
        customer, order (-1 for outreach), t, placement, channel, action, offer_type,
        category (-1 for none), discount, propensity, accepted_t (NaN), revenue (NaN),
        p_accept, p_anyway, reference_category; sorted by (customer, t).
    """
    p = world.params
    op = p.offers
    n_cat = len(p.categories)
    order_customer, order_t = orders["customer"], orders["t"]
    n_orders = order_customer.size
    if n_orders == 0:
        # No orders: no tracking pages and nobody is eligible for outreach.
        return {name: np.zeros(0, dtype=dtype) for name, dtype in _OFFER_FIELDS.items()}

    # Tracking page: anxious customers of late parcels look more often.
    views = rng.poisson(op.views_base + op.views_late * shipments["late"])
    viewed = np.repeat(np.arange(n_orders), views)
    end = np.where(
        shipments["lost"], shipments["promised"] + op.lost_view_days, shipments["delivered"]
    )
    shipped = shipments["shipped"][viewed]
    track_t = shipped + rng.random(viewed.size) * (end[viewed] - shipped)
    track_late = track_t > shipments["promised"][viewed]

    # Outreach: a monthly run to consenting customers whose last order is a while ago.
    keys = order_customer * KEY_SCALE + order_t
    everyone = np.arange(pop.size)
    out_c, out_t, out_ch = [], [], []
    preferred_ok = pop.consent[everyone, pop.preferred]
    channel = np.where(preferred_ok, pop.preferred, np.where(pop.consent[:, 0], 0, -1))
    for month_start in world.timeline.month_starts:
        t = month_start + (op.outreach_hour + op.outreach_spread_h * rng.random(pop.size)) / 24
        last = np.searchsorted(keys, everyone * KEY_SCALE + t, side="left") - 1
        has = (last >= 0) & (order_customer[np.maximum(last, 0)] == everyone)
        last_t = np.where(has, order_t[np.maximum(last, 0)], np.inf)
        send = (
            has
            & (t - last_t >= op.outreach_min_days)
            & pop.consent[:, 3]
            & (channel >= 0)
            & (rng.random(pop.size) < op.outreach_prob)
        )
        out_c.append(everyone[send])
        out_t.append(t[send])
        out_ch.append(1 + channel[send])

    customer = np.concatenate([order_customer[viewed], *out_c])
    t = np.concatenate([track_t, *out_t])
    n_out = customer.size - viewed.size
    order = np.concatenate([viewed, np.full(n_out, -1)])
    placement = np.concatenate(
        [np.full(viewed.size, PLACEMENT_TRACKING), np.full(n_out, PLACEMENT_OUTREACH)]
    )
    channel = np.concatenate([np.full(viewed.size, CHANNEL_WEB), *out_ch]).astype(np.int64)
    late_now = np.concatenate([track_late, np.zeros(n_out, dtype=bool)])
    # Sorted by (customer, time) from here on: the output order, and sorted queries make
    # the searches below much faster.
    sort = np.lexsort((t, customer))
    customer, t, order, placement = customer[sort], t[sort], order[sort], placement[sort]
    channel, late_now = channel[sort], late_now[sort]

    # The policy's "most-ordered category": order lines per category over the customer's
    # orders placed before the decision (ties go to the more popular category).
    counts = np.bincount(
        lines["order"] * n_cat + lines["category"], minlength=n_orders * n_cat
    ).reshape(n_orders, n_cat)
    cum = np.cumsum(counts, axis=0)
    first_of = np.searchsorted(order_customer, order_customer, side="left")
    cum = cum - np.where(first_of[:, None] > 0, cum[np.maximum(first_of - 1, 0)], 0)
    before = np.searchsorted(keys, customer * KEY_SCALE + t, side="left") - 1
    top = np.argmax(cum[before], axis=1)

    action = draw_categorical(rng, world.policy_cum[placement, top])
    propensity = world.policy_prob[placement, top, action]
    category = world.action_category[action]
    discount = world.action_discount[action]
    reference = np.where(category >= 0, category, top)

    first_return = np.full((pop.size, n_cat), np.inf)
    ret_customer = order_customer[returns["order"]]
    np.minimum.at(first_return, (ret_customer, returns["category"]), returns["requested"])
    returned = first_return[customer, reference] < t

    price_factor = price_factors(p, world.timeline.start, t)
    p_accept, p_anyway = accept_probs(
        pop.affinity[customer, reference],
        pop.order_rate[customer],
        pop.loyalty[customer],
        pop.price_sensitivity[customer],
        category < 0,
        discount,
        late_now,
        returned,
        p,
        price_factor,
    )
    accepted = rng.random(customer.size) < p_accept
    accepted_t = np.where(accepted, t + op.window_days * rng.random(customer.size), np.nan)
    price = np.array([c.price_median for c in p.categories])[reference]
    revenue = np.where(accepted, np.round(price * price_factor * (1.0 - discount), 2), np.nan)

    return {
        "customer": customer,
        "order": order,
        "t": t,
        "placement": placement,
        "channel": channel,
        "action": action,
        "offer_type": world.action_type[action],
        "category": category,
        "discount": discount,
        "propensity": propensity,
        "accepted_t": accepted_t,
        "revenue": revenue,
        "p_accept": p_accept,
        "p_anyway": p_anyway,
        "reference_category": reference,
    }
