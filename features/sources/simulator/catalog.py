"""The product catalogue: generated once per seed, shared by every chunk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.sources.simulator.params import STREAM_PRODUCTS, SimulatorParams


@dataclass(frozen=True)
class Catalog:
    """Products as arrays indexed by product number (product_id "p{index + 1}").

    Attributes:
        category: Category index per product.
        price: List price.
        margin: Gross margin fraction.
        weight_g: Shipping weight.
        cum_popularity: Per product, the category index plus the cumulative popularity within
            its category, so one `searchsorted(cum_popularity, category + u)` picks a product
            of a given category by popularity.
    """

    category: np.ndarray
    price: np.ndarray
    margin: np.ndarray
    weight_g: np.ndarray
    cum_popularity: np.ndarray

    @property
    def size(self) -> int:
        return len(self.category)

    def pick(self, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Product indices of the given categories, drawn by popularity from uniforms `u`."""
        # Keep category + u strictly inside [category, category + 1) despite float rounding.
        u = np.minimum(u, 1.0 - 1e-9)
        return np.searchsorted(self.cum_popularity, category + u, side="right")


def build_catalog(seed: int, params: SimulatorParams) -> Catalog:
    """Draw the catalogue from the seed alone, so every chunk and worker agrees on it."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_PRODUCTS]))
    per = params.catalog.products_per_category
    n_cat = len(params.categories)
    category = np.repeat(np.arange(n_cat), per)
    price = np.empty(n_cat * per)
    margin = np.empty(n_cat * per)
    weight = np.empty(n_cat * per)
    cum = np.empty(n_cat * per)
    rank_weight = np.arange(1, per + 1, dtype=np.float64) ** -params.catalog.zipf_exponent
    for c, cat in enumerate(params.categories):
        sl = slice(c * per, (c + 1) * per)
        raw = cat.price_median * np.exp(cat.price_sigma * rng.standard_normal(per))
        # Shop prices end in .99 (or .49 below 5): the usual psychological price points.
        price[sl] = np.where(raw >= 5.0, np.maximum(np.round(raw), 1.0) - 0.01, 4.49)
        margin[sl] = np.clip(
            cat.margin_mean + params.catalog.margin_sd * rng.standard_normal(per), 0.02, 0.9
        )
        weight[sl] = np.round(
            cat.weight_median_g * np.exp(params.catalog.weight_sigma * rng.standard_normal(per))
        )
        popularity = rng.permutation(rank_weight)
        share = np.cumsum(popularity) / popularity.sum()
        share[-1] = 1.0
        cum[sl] = c + share
    return Catalog(
        category=category,
        price=np.round(price, 2),
        margin=np.round(margin, 4),
        weight_g=np.maximum(weight, 20.0),
        cum_popularity=cum,
    )
