"""The delivery benchmark's hindsight scale: what the outcomes allow an estimate that knows
nothing of the order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.delivery import hindsight


def _rows(days: list[float | None], zone: str = "UTC") -> pd.DataFrame:
    decided = pd.Timestamp("2024-03-01 12:00", tz="UTC")
    actual = [
        np.datetime64("NaT") if d is None else np.datetime64("2024-03-01") + np.timedelta64(d, "D")
        for d in days
    ]
    return pd.DataFrame(
        {
            "event_timestamp": [decided] * len(days),
            "timezone": [zone] * len(days),
            "actual_date": np.array(actual, dtype="datetime64[D]"),
        }
    )


def test_the_median_estimate_and_the_narrowest_window_of_the_outcomes() -> None:
    scale = hindsight(_rows([0, 1, 2, 3, 4, 5, 6, 7, 8, 30]), 0.9)
    assert scale["median_days"] == 4.5
    assert scale["mae_days"] == pytest.approx(np.mean(np.abs(np.r_[0:9, 30] - 4.5)))
    # Nine of ten outcomes: days 0 to 8, not the outlier.
    assert scale["width_days"] == 8


def test_an_outcome_never_observed_is_never_held() -> None:
    # Ten rows, one lost: 90% means all nine delivered ones.
    assert hindsight(_rows([0, 1, 2, 3, 4, 5, 6, 7, 20, None]), 0.9)["width_days"] == 20
    assert np.isnan(hindsight(_rows([1, None, None]), 0.9)["width_days"])


def test_days_count_from_the_decisions_local_date() -> None:
    # Decided at 12:00 UTC on 1 March, which is 02:00 on 2 March at UTC+14; delivered on 3
    # March local: one day after the local decision date, not two after the UTC one.
    assert hindsight(_rows([2, 2, 2], zone="Pacific/Kiritimati"), 0.9)["median_days"] == 1
    assert hindsight(_rows([2, 2, 2]), 0.9)["median_days"] == 2
