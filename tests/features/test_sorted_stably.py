"""Label events ordered by Arrow come out as pandas' stable sort orders them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.frames import sorted_stably

WORDS = ["s10", "s9", "s100", "é", "e", "Z", "a", "ß", "😀", "s1", "", "\u00e9"]


def _events(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    instants = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 5, rows), unit="h"
    )
    frame = pd.DataFrame(
        {
            "event_timestamp": instants,
            "shipment_id": rng.choice(WORDS, rows).astype(object),
            "score": rng.choice([0.5, -0.0, 0.0, np.nan, 2.0], rows),
            "row": np.arange(rows),
        }
    )
    frame.loc[rng.random(rows) < 0.1, "shipment_id"] = None
    frame.loc[rng.random(rows) < 0.1, "event_timestamp"] = pd.NaT
    return frame


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "columns",
    [["event_timestamp", "shipment_id"], ["shipment_id"], ["score", "shipment_id"], ["row"]],
)
def test_the_order_is_pandas_stable_sort(seed, columns) -> None:
    frame = _events(np.random.default_rng(seed), 400)
    pd.testing.assert_frame_equal(
        sorted_stably(frame, columns), frame.sort_values(columns, kind="stable")
    )


def test_columns_arrow_cannot_take_are_sorted_by_pandas() -> None:
    frame = pd.DataFrame({"key": pd.Series([3, "b", 1, "a"], dtype=object), "row": range(4)})
    # pandas cannot order numbers among strings either, and says so.
    with pytest.raises(TypeError):
        sorted_stably(frame, ["key"])
    categories = pd.DataFrame(
        {"key": pd.Categorical(["b", "a", "c", "a"], categories=["c", "b", "a"]), "row": range(4)}
    )
    pd.testing.assert_frame_equal(
        sorted_stably(categories, ["key"]), categories.sort_values(["key"], kind="stable")
    )
    assert sorted_stably(categories, ["key"])["row"].tolist() == [2, 0, 1, 3]
