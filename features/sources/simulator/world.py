"""Everything every chunk shares: parameters, calendar, catalogue and derived lookup tables."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import numpy as np

from features.sources.simulator.catalog import Catalog, build_catalog
from features.sources.simulator.params import (
    OFFER_ACTIONS_PER_CATEGORY,
    OPENABLE_REGIONS,
    PriceChange,
    RegionOpening,
    SimulatorParams,
)
from features.sources.simulator.timeline import Timeline, build_timeline

EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class World:
    """Shared, read-only context of one simulation run.

    Attributes:
        params: The parameter set.
        timeline: Calendar, seasonality and the seasonal clock.
        catalog: Products.
        promo: Price cut per day (Black Friday week, pre-Christmas).
        warehouse_km: Road distance (warehouse, destination region) between centres.
        nearest_warehouse: Index of the closest warehouse per destination region.
        channel_cum: Cumulative channel probabilities (preferred channel, reason, channel).
        carrier_cum: Cumulative carrier probabilities per service level.
        payment_cum: Cumulative payment-method probabilities per region.
        action_type: Offer type per action: 0 = none, 1 = recommendation, 2 = discount.
        action_category: Category index per action (-1 for none).
        action_discount: Discount per action.
        policy_prob: Logging-policy probabilities (placement, top category, action).
        policy_cum: Their cumulative sums along the action axis.
    """

    params: SimulatorParams
    timeline: Timeline
    catalog: Catalog
    promo: np.ndarray
    warehouse_km: np.ndarray
    nearest_warehouse: np.ndarray
    channel_cum: np.ndarray
    carrier_cum: np.ndarray
    payment_cum: np.ndarray
    action_type: np.ndarray
    action_category: np.ndarray
    action_discount: np.ndarray
    policy_prob: np.ndarray
    policy_cum: np.ndarray


def cumulative(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative probabilities of non-negative weights, the last exactly 1."""
    w = weights / weights.sum(axis=-1, keepdims=True)
    cum = np.cumsum(w, axis=-1)
    cum[..., -1] = 1.0
    return cum


def _haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def policy_tables(params: SimulatorParams) -> tuple[np.ndarray, ...]:
    """The logging policy's action space and its probabilities.

    Action 0 is the control ("none"); then, per category, one action per entry of
    `OFFER_ACTIONS_PER_CATEGORY`. The non-control probabilities are a softmax over a heuristic
    score (most-ordered category, popularity, placement's taste for discounts) that depends
    only on the placement and the customer's most-ordered category, so the whole policy is a
    small table and the logged propensity is exactly the table entry.

    Returns:
        action_type, action_category, action_discount, policy_prob (2, categories, actions).
    """
    op = params.offers
    n_cat = len(params.categories)
    variants = OFFER_ACTIONS_PER_CATEGORY
    kinds = {"none": 0, "recommendation": 1, "discount": 2}
    action_type = np.array([0] + [kinds[v[0]] for _ in range(n_cat) for v in variants])
    action_category = np.array([-1] + [c for c in range(n_cat) for _ in variants])
    action_discount = np.array([0.0] + [v[1] for _ in range(n_cat) for v in variants])
    log_pop = np.log([c.popularity for c in params.categories])
    prob = np.zeros((2, n_cat, len(action_type)))
    for placement in range(2):
        variant_score = np.tile(np.asarray(op.score_action[placement]), n_cat)
        for top in range(n_cat):
            score = (
                op.score_top * (action_category[1:] == top)
                + op.score_popularity * log_pop[action_category[1:]]
                + variant_score
            ) / op.temperature
            soft = np.exp(score - score.max())
            prob[placement, top, 1:] = (1.0 - op.control_share) * soft / soft.sum()
            prob[placement, top, 0] = op.control_share
    return action_type, action_category, action_discount, prob


def with_opened_regions(params: SimulatorParams) -> SimulatorParams:
    """The parameter set with every region a `RegionOpening` opens among its regions.

    An opened region is appended with weight 0: nobody is drawn there, and the draws of the
    regions before it are unchanged (customers move there in `population.open_regions`).

    Raises:
        ValueError: A region opening names a region that already has customers or that the
            shop cannot open, or has a share outside (0, 1] or a non-positive factor; a price
            change has a non-positive factor.
    """
    regions = list(params.regions)
    openable = {r.code: r for r in OPENABLE_REGIONS}
    for shock in params.shocks:
        if isinstance(shock, PriceChange) and not shock.factor > 0:
            raise ValueError(f"shock: a price factor must be positive, got {shock.factor}")
        if not isinstance(shock, RegionOpening):
            continue
        if not 0 < shock.share <= 1 or not shock.factor > 0:
            raise ValueError(
                f"shock: opening {shock.region!r} needs a share in (0, 1] and a positive "
                f"factor, got share {shock.share} and factor {shock.factor}"
            )
        served = {r.code: r for r in regions}
        if shock.region in served:
            if served[shock.region].weight > 0:
                raise ValueError(f"shock: region {shock.region!r} already has customers")
            continue
        if shock.region not in openable:
            raise ValueError(
                f"shock: unknown region {shock.region!r}; regions that can open: "
                f"{', '.join(openable)}"
            )
        regions.append(openable[shock.region])
    if len(regions) == len(params.regions):
        return params
    return replace(params, regions=tuple(regions))


def build_world(seed: int, start: date, months: int, params: SimulatorParams) -> World:
    """Build the shared context; deterministic in (seed, start, months, params).

    Raises:
        ValueError: A shock that cannot apply (`with_opened_regions`).
    """
    params = with_opened_regions(params)
    timeline = build_timeline(start, months, params.seasonality)
    catalog = build_catalog(seed, params)

    total = len(timeline.season)
    promo = np.zeros(total)
    day_numbers = (timeline.epoch_s // 86_400) + np.arange(total)
    dates = day_numbers.astype("datetime64[D]")
    month_of = (dates.astype("datetime64[M]") - dates.astype("datetime64[Y]")).astype(int) + 1
    dom = (dates - dates.astype("datetime64[M]")).astype(int) + 1
    promo[(month_of == 12) & (dom <= 20)] = params.orders.christmas_discount
    for bf in timeline.black_friday:
        lo, hi = max(bf - 4, 0), min(bf + 4, total)
        if lo < hi:
            promo[lo:hi] = params.orders.black_friday_discount

    wh_lat = np.array([w.lat for w in params.warehouses])[:, None]
    wh_lon = np.array([w.lon for w in params.warehouses])[:, None]
    rg_lat = np.array([r.lat for r in params.regions])[None, :]
    rg_lon = np.array([r.lon for r in params.regions])[None, :]
    warehouse_km = params.shipping.road_factor * _haversine_km(wh_lat, wh_lon, rg_lat, rg_lon)

    cp = params.contacts
    base = np.log(np.asarray(cp.channel_by_preferred))[:, None, :]
    shift = np.asarray(cp.channel_reason_shift)[None, :, :]
    channel_cum = cumulative(np.exp(base + shift))

    carrier_cum = cumulative(np.array([c.shares for c in params.carriers]).T)
    payment_cum = cumulative(np.array([r.payment_weights for r in params.regions]))
    action_type, action_category, action_discount, prob = policy_tables(params)
    return World(
        params=params,
        timeline=timeline,
        catalog=catalog,
        promo=promo,
        warehouse_km=warehouse_km,
        nearest_warehouse=np.argmin(warehouse_km, axis=0),
        channel_cum=channel_cum,
        carrier_cum=carrier_cum,
        payment_cum=payment_cum,
        action_type=action_type,
        action_category=action_category,
        action_discount=action_discount,
        policy_prob=prob,
        policy_cum=cumulative(prob),
    )


def draw_categorical(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    """One draw per row from row-wise cumulative probabilities `cum` (n, k)."""
    u = rng.random(len(cum))
    return np.minimum((cum < u[:, None]).sum(axis=1), cum.shape[1] - 1)
