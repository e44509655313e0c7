"""The uplift oracle's selections, held against a hand count on six rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.oracle import TRUE_EFFECT, uplift_selections


def rows(with_ceiling: bool) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            TRUE_EFFECT: [0.30, 0.20, 0.10, -0.05, -0.10, 0.00],
            "score": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06],
            "baseline": [0.06, 0.05, 0.04, 0.03, 0.02, 0.01],
            "random": [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
            "value": np.full(6, 10.0),
            "cost": np.full(6, 0.05),
        }
    )
    if with_ceiling:
        # Right but for the last two: it puts the harmful row above the neutral one.
        frame["ceiling"] = [0.25, 0.2, 0.15, 0.01, -0.2, -0.1]
    return frame


def test_each_ranking_selects_its_top_third_worth_its_cost() -> None:
    out = uplift_selections(rows(with_ceiling=False), capacity=0.5).set_index("ranking")
    assert list(out.index) == ["model", "todays_ranking", "random", "oracle"]
    # Top 3 by score × 10 − 0.05: rows 5, 4, 3 (effects 0, −0.1, −0.05).
    assert out.at["model", "incremental_repurchases"] == pytest.approx(-0.15)
    assert out.at["model", "negative_share"] == pytest.approx(2 / 3)
    assert out.at["todays_ranking", "incremental_repurchases"] == pytest.approx(0.6)
    # Random takes the top three of its column, whatever their worth: rows 0, 1, 2.
    assert out.at["random", "incremental_repurchases"] == pytest.approx(0.6)
    # The oracle takes only rows worth their cost: effect × 10 > 0.05.
    assert out.at["oracle", "selected"] == 3
    assert out.at["oracle", "incremental_margin"] == pytest.approx(6.0 - 0.15)


def test_a_feature_ceiling_column_adds_its_ranking() -> None:
    out = uplift_selections(rows(with_ceiling=True), capacity=0.5).set_index("ranking")
    assert out.index[-1] == "feature_ceiling"
    # Rows worth their cost: 0, 1, 2 (0.01 × 10 = 0.1 > 0.05 too, but only three fit).
    assert out.at["feature_ceiling", "incremental_repurchases"] == pytest.approx(0.6)
    assert out.at["feature_ceiling", "negative_share"] == 0.0
    assert out.at["feature_ceiling", "spearman"] < 1.0
