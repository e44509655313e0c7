"""Customers: observable attributes (signup, region, channel, consents) and latent traits."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from features.sources.simulator.params import RegionOpening, SimulatorParams
from features.sources.simulator.timeline import Timeline


def languages(params: SimulatorParams) -> tuple[str, ...]:
    """The language vocabulary: every region's language plus English."""
    return tuple(sorted({r.language for r in params.regions} | {"en"}))


@dataclass(frozen=True)
class Population:
    """One chunk of customers as parallel arrays (index = customer number within the chunk).

    Attributes:
        signup_t: Signup time, days since the start.
        region: Region index.
        language: Index into `languages(params)`.
        preferred: Preferred outreach channel index (email, sms, voice).
        consent: Boolean (n, 4): email, sms, voice, marketing.
        loyalty: Latent loyalty (standard normal): more orders, less churn, buys anyway more.
        order_rate: λ_i, orders per average day while the customer stays.
        churn_base: Base churn logit after an order with nothing wrong.
        affinity: (n, categories) Dirichlet category preferences, rows sum to 1.
        price_sensitivity: Response to discounts (mean 1).
        payment_reliability: Latent (standard normal); low values pay invoices late.
        openness: Latent trait behind the correlated consent flags.
        is_member: Holds a paid yearly membership from the first order on.
    """

    signup_t: np.ndarray
    region: np.ndarray
    language: np.ndarray
    preferred: np.ndarray
    consent: np.ndarray
    loyalty: np.ndarray
    order_rate: np.ndarray
    churn_base: np.ndarray
    affinity: np.ndarray
    price_sensitivity: np.ndarray
    payment_reliability: np.ndarray
    openness: np.ndarray
    is_member: np.ndarray

    @property
    def size(self) -> int:
        return len(self.signup_t)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def draw_population(
    rng: np.random.Generator, n: int, timeline: Timeline, params: SimulatorParams
) -> Population:
    """Draw `n` customers who all sign up within the simulated period."""
    cp = params.customers
    a, b = cp.signup_beta
    signup_t = timeline.days * rng.beta(a, b, size=n)

    region_w = np.array([r.weight for r in params.regions])
    region = rng.choice(len(region_w), size=n, p=region_w / region_w.sum())
    langs = languages(params)
    region_lang = np.array([langs.index(r.language) for r in params.regions])
    english = rng.random(n) < cp.english_share
    language = np.where(english, langs.index("en"), region_lang[region])

    channel_w = np.asarray(cp.channel_weights)
    preferred = rng.choice(3, size=n, p=channel_w / channel_w.sum())
    openness = rng.standard_normal(n)
    logits = np.asarray(cp.consent_logit)[None, :] + cp.consent_openness * openness[:, None]
    logits[:, :3] += cp.consent_preferred * (preferred[:, None] == np.arange(3)[None, :])
    consent = rng.random((n, 4)) < _sigmoid(logits)

    loyalty = rng.standard_normal(n)
    is_member = rng.random(n) < cp.member_share
    mean_rate = 1.0 / cp.mean_order_gap_days
    # Gamma heterogeneity times a loyalty term whose mean is 1, so the population mean rate
    # stays at 1 / mean_order_gap_days before the membership boost.
    order_rate = (
        rng.gamma(cp.rate_shape, mean_rate / cp.rate_shape, size=n)
        * np.exp(cp.rate_loyalty * loyalty - 0.5 * cp.rate_loyalty**2)
        * np.where(is_member, cp.member_rate_multiplier, 1.0)
    )
    churn_base = (
        cp.churn_base_mean
        + cp.churn_base_sd * rng.standard_normal(n)
        - cp.churn_loyalty * loyalty
        + np.where(is_member, cp.member_churn_shift, 0.0)
    )
    popularity = np.array([c.popularity for c in params.categories])
    alpha = cp.affinity_concentration * popularity / popularity.sum()
    # Normalised gammas are a Dirichlet draw; a tiny floor keeps every category reachable.
    g = rng.gamma(alpha[None, :], size=(n, len(alpha))) + 1e-12
    affinity = g / g.sum(axis=1, keepdims=True)
    price_sensitivity = rng.gamma(
        cp.price_sensitivity_shape, 1.0 / cp.price_sensitivity_shape, size=n
    )
    payment_reliability = rng.standard_normal(n)
    return Population(
        signup_t=signup_t,
        region=region,
        language=language,
        preferred=preferred,
        consent=consent,
        loyalty=loyalty,
        order_rate=order_rate,
        churn_base=churn_base,
        affinity=affinity,
        price_sensitivity=price_sensitivity,
        payment_reliability=payment_reliability,
        openness=openness,
        is_member=is_member,
    )


def open_regions(
    rng: np.random.Generator, pop: Population, timeline: Timeline, params: SimulatorParams
) -> Population:
    """Move customers to the regions that open (`params.RegionOpening`) from their start.

    Of the customers signing up on or after an opening's first day, a share `share` lives in
    the new region; they take its language unless they use English in a region that speaks
    another. `rng` is a stream of its own, so every other draw of the chunk is unchanged.

    Args:
        rng: The chunk's shock stream.
        pop: The chunk's customers, drawn over the regions of `params` (opened ones with
            weight 0, see `world.with_opened_regions`).
        timeline: The simulated calendar.
        params: The parameter set with the opened regions among its regions.
    """
    openings = [s for s in params.shocks if isinstance(s, RegionOpening)]
    if not openings:
        return pop
    codes = [r.code for r in params.regions]
    langs = languages(params)
    region_lang = np.array([langs.index(r.language) for r in params.regions])
    region, language = pop.region.copy(), pop.language.copy()
    for opening in openings:
        first_day = (opening.start - timeline.start).days
        moved = (pop.signup_t >= first_day) & (rng.random(pop.size) < opening.share)
        index = codes.index(opening.region)
        expat = language != region_lang[region]
        language = np.where(moved & ~expat, region_lang[index], language)
        region = np.where(moved, index, region)
    return replace(pop, region=region, language=language)
