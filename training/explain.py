"""Explanations: global SHAP summary, dependence plots, and per-row reason codes in words.

What a training run logs about its model's explanations: contributions and reason codes
come from `models.served.reasons`, the functions the service answers with, so analysts
reading a run and callers reading an answer read the same words.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.describe import DESCRIPTIONS, describe
from models.served.encoding import FeatureLayout
from models.served.reasons import Reason, contributions, reason_codes, shown_value

log = logging.getLogger(__name__)

# Words for the decision-time features of features.build.derived (and the decision's own
# features), which no Feast view describes: they are computed at request time, not stored.
# `training.data.feature_words` starts from them (the Feast descriptions of stored features
# then replace theirs); reason texts word every feature through `features.describe.describe`.
TIME_FEATURE_WORDS = dict(DESCRIPTIONS)
SUMMARY_ROWS = 2000
DEPENDENCE_TOP = 3


def global_importance(contrib: pd.DataFrame) -> pd.Series:
    """Mean |contribution| per feature, largest first."""
    return contrib.drop(columns="bias").abs().mean().sort_values(ascending=False)


def reason_table(reasons: list[list[Reason]], index: pd.Index) -> pd.DataFrame:
    """Reason codes as a long table: one row per (input row, rank)."""
    records = [
        {"row": idx, "rank": rank + 1, **r.__dict__}
        for idx, row in zip(index, reasons, strict=True)
        for rank, r in enumerate(row)
    ]
    return pd.DataFrame(
        records, columns=["row", "rank", "feature", "value", "contribution", "text"]
    )


def shap_explanation(
    contrib: pd.DataFrame, layout: FeatureLayout, data: pd.DataFrame, *, shown: bool = True
):
    """Rows' contributions as a `shap.Explanation`, for shap's plots.

    Values and base values are on the raw model's scale (log-odds for a classifier); `data`
    holds the encoded inputs (categories as codes, so the beeswarm can colour them) and
    `display_data` the values as reason codes show them, so a waterfall reads "42 days",
    not 42.0.

    Args:
        contrib: Contributions from `models.served.reasons.contributions` (with `bias`).
        layout: The model's feature layout.
        data: The rows' feature values, aligned with `contrib`.
        shown: Add `display_data` (the beeswarm never reads it; wording thousands of rows
            costs time).
    """
    import shap

    features = list(layout.features)
    display = None
    if shown:
        raw = data.reindex(columns=features)
        display = np.array(
            [
                [shown_value(raw.iat[i, j], name) for j, name in enumerate(features)]
                for i in range(len(raw))
            ],
            dtype=object,
        ).reshape(len(raw), len(features))
    return shap.Explanation(
        values=contrib[features].to_numpy(),
        base_values=contrib["bias"].to_numpy(),
        data=layout.matrix(data),
        display_data=display,
        feature_names=features,
    )


def summary_plot(contrib: pd.DataFrame, layout: FeatureLayout, data: pd.DataFrame) -> Figure:
    """SHAP beeswarm of the rows: every feature's contribution, coloured by its value."""
    import shap

    explanation = shap_explanation(contrib, layout, data, shown=False)
    # Drawn on a Figure of our own, not pyplot's global state: nothing to close, any backend.
    figure = Figure(figsize=(8, 7))
    axes = figure.subplots()
    shap.plots.beeswarm(explanation, max_display=20, ax=axes, show=False, plot_size=None)
    return figure


def dependence_plot(
    contrib: pd.DataFrame, layout: FeatureLayout, data: pd.DataFrame, feature: str, words: dict
) -> Figure:
    """Contribution of one feature against its value (categories as labelled columns)."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    y = contrib[feature].to_numpy()
    if feature in layout.categories:
        codes = layout.column(feature, data[feature])
        jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(codes))
        axes.scatter(codes + jitter, y, s=4, alpha=0.4)
        used = sorted({int(c) for c in codes[~np.isnan(codes)]})
        labels = layout.category_labels(feature, np.array(used, dtype=np.float64))
        axes.set_xticks(used, list(labels), rotation=45, ha="right")
    else:
        x = pd.to_numeric(data[feature], errors="coerce").to_numpy(dtype=np.float64)
        axes.scatter(x, y, s=4, alpha=0.4)
    axes.axhline(0.0, color="grey", linewidth=0.8)
    # The axis holds stored values (hours, fractions): the raw name says their unit.
    axes.set_xlabel(f"{describe(feature, words)} ({feature})")
    axes.set_ylabel(f"contribution of {feature} (log-odds)")
    return figure


def write_explanations(
    booster,
    layout: FeatureLayout,
    data: pd.DataFrame,
    words: dict[str, str],
    out_dir: Path,
    num_iteration: int | None = None,
    rows: int = SUMMARY_ROWS,
    top: int = DEPENDENCE_TOP,
    k: int = 3,
    seed: int = 7,
    contributions_of: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> dict[str, Path]:
    """Write the summary plot, dependence plots, importance and reason codes of a sample.

    Args:
        booster: The fitted booster.
        layout: Its feature layout.
        data: Rows to explain (the test window); a seeded sample of `rows` is used.
        words: Feature descriptions for the reason codes and axis labels.
        out_dir: Folder to write into (created).
        num_iteration: Trees to use.
        rows: Sample size (exact SHAP costs about 1 ms per row).
        top: Dependence plots for this many most important features.
        k: Reason codes per row.
        seed: Sampling seed.
        contributions_of: Rows → their SHAP contributions, for a model that is not one
            booster (an uplift model's weighted sum of boosters); `booster` is then unused.

    Returns:
        Artifact name → written path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = data.sample(n=min(rows, len(data)), random_state=seed) if len(data) else data
    if contributions_of is not None:
        contrib = contributions_of(sample)
    else:
        contrib = contributions(booster, layout, sample, num_iteration)
    importance = global_importance(contrib)
    paths: dict[str, Path] = {}
    figure = summary_plot(contrib, layout, sample)
    paths["shap_summary"] = out_dir / "shap_summary.png"
    figure.savefig(paths["shap_summary"], dpi=110, bbox_inches="tight")
    for feature in importance.index[:top]:
        figure = dependence_plot(contrib, layout, sample, feature, words)
        paths[f"dependence_{feature}"] = out_dir / f"shap_dependence_{feature}.png"
        figure.savefig(paths[f"dependence_{feature}"], dpi=110)
    table = importance.rename("mean_abs_contribution").rename_axis("feature").reset_index()
    table["description"] = table["feature"].map(lambda f: describe(f, words))
    paths["shap_importance"] = out_dir / "shap_importance.csv"
    table.to_csv(paths["shap_importance"], index=False)
    reasons = reason_codes(contrib, sample, words, k=k)
    paths["reason_codes"] = out_dir / "reason_codes.csv"
    reason_table(reasons, sample.index).to_csv(paths["reason_codes"], index=False)
    log.info("explained %d rows; top features %s", len(sample), list(importance.index[:top]))
    return paths
