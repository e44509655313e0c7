"""Why a model scored a row as it did: SHAP contributions and the reasons in words.

Contributions are LightGBM's exact TreeSHAP values (`pred_contrib`), on the raw model's
scale (log-odds for a classifier): calibration is monotone, so it never changes which
features push a score up. `Reason.of` is the one wording of a reason, used by the reason
tables logged with every training run and by the service's answers alike.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.describe import describe, format_value
from models.served.encoding import FeatureLayout

DIRECTIONS = ("up", "abs")


def contributions(
    booster, layout: FeatureLayout, data: pd.DataFrame, num_iteration: int | None = None
) -> pd.DataFrame:
    """Per-row SHAP contributions, one column per feature plus `bias`.

    Args:
        booster: The fitted LightGBM booster.
        layout: Its feature layout.
        data: Rows holding the feature columns.
        num_iteration: Trees to use (the best iteration).
    """
    values = booster.predict(layout.matrix(data), num_iteration=num_iteration, pred_contrib=True)
    return pd.DataFrame(values, columns=[*layout.features, "bias"], index=data.index)


def shown_value(value: object, name: str = "") -> str:
    """A feature's value for people, formatted by the feature's kind
    (`features.describe.format_value`: percentages, money, durations, counts, dates)."""
    return format_value(name, value)


@dataclass(frozen=True)
class Reason:
    """One reason code: which feature, its value, how much it moved the score, in words."""

    feature: str
    value: str
    contribution: float
    text: str

    @classmethod
    def of(
        cls,
        feature: str,
        shown: str,
        contribution: float,
        words: Mapping[str, str],
        withheld: Collection[str] = (),
    ) -> Reason:
        """The reason "<description>: <value> (raises|lowers the score)", or, for a feature in
        `withheld`, "<description> (raises|lowers the score)" with an empty value.

        Args:
            feature: The feature's name (kept raw: callers key on it).
            shown: Its value as `shown_value(value, feature)` gives it.
            contribution: Its contribution to the score.
            words: The model's feature descriptions (`features.describe.describe` fills
                and overrides them).
            withheld: Features named without their value: personal ones, in words bound
                for exports and logs (`features.contract.schema.PERSONAL_COLUMNS`).
        """
        effect = "raises" if contribution > 0 else "lowers"
        if feature in withheld:
            text = f"{describe(feature, dict(words))} ({effect} the score)"
            return cls(feature, "", contribution, text)
        text = f"{describe(feature, dict(words))}: {shown} ({effect} the score)"
        return cls(feature, shown, contribution, text)


def reason_codes(
    contrib: pd.DataFrame,
    data: pd.DataFrame,
    words: Mapping[str, str],
    k: int = 3,
    direction: str = "up",
    withheld: Collection[str] = (),
) -> list[list[Reason]]:
    """The top-k features behind each row's score.

    Args:
        contrib: Contributions from `contributions` (rows aligned with `data`).
        data: The rows' feature values (as the caller knows them, before encoding).
        words: Feature → description (`features.describe.describe` overrides and fills
            it; never the raw name).
        k: Reasons per row.
        direction: "up" (features raising the score, largest first; a row may get fewer
            than k) or "abs" (largest effect either way).
        withheld: Features named without their value (`Reason.of`).

    Returns:
        For each row, its reasons.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    features = [c for c in contrib.columns if c != "bias"]
    values = contrib[features].to_numpy()
    keyed = np.abs(values) if direction == "abs" else values
    order = np.argsort(-keyed, axis=1, kind="stable")[:, :k]
    out = []
    raw = data[features]
    for i in range(len(values)):
        row = []
        for j in order[i]:
            c = float(values[i, j])
            if direction == "up" and c <= 0:
                break
            name = features[j]
            row.append(Reason.of(name, shown_value(raw.iat[i, j], name), c, words, withheld))
        out.append(row)
    return out


def top_reasons(
    contrib: np.ndarray,
    record: Mapping[str, object],
    features: Sequence[str],
    words: Mapping[str, str],
    k: int,
) -> list[Reason]:
    """The top-k features raising one row's score, from a contribution vector and the row as
    a dict: `reason_codes` with direction "up" for the per-request path (a test holds the
    two equal)."""
    order = np.argsort(-contrib[: len(features)], kind="stable")[:k]
    out = []
    for j in order:
        c = float(contrib[j])
        if c <= 0:
            break
        name = features[j]
        out.append(Reason.of(name, shown_value(record.get(name), name), c, words))
    return out
