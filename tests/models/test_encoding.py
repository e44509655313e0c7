"""The one encoder: a request's rows as dicts encode as a frame of the same rows does."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.served.encoding import MISSING_CATEGORY, FeatureLayout

LAYOUT = FeatureLayout(
    ("orders_total", "last_event_type", "late_rate_28d", "is_first_order"),
    {"last_event_type": ("dispatch", "hub_scan", MISSING_CATEGORY)},
)


@pytest.mark.parametrize(
    "record",
    [
        {"orders_total": 3, "last_event_type": "hub_scan", "late_rate_28d": 0.25},
        {"orders_total": None, "last_event_type": None, "late_rate_28d": math.nan},
        {"orders_total": np.int64(7), "last_event_type": "new", "late_rate_28d": np.float32(0.1)},
        {"orders_total": 1.5, "last_event_type": math.nan, "is_first_order": True},
        {"orders_total": pd.NA, "last_event_type": pd.NA, "late_rate_28d": "2.5"},
        {},
    ],
    ids=["values", "missing", "numpy-and-unseen", "nan-category-and-flag", "pandas-na", "empty"],
)
def test_a_record_encodes_as_its_frame_row(record: dict) -> None:
    frame = pd.DataFrame([{name: record.get(name) for name in LAYOUT.features}])
    by_value = np.array([LAYOUT.encode(name, record.get(name)) for name in LAYOUT.features])
    np.testing.assert_array_equal(LAYOUT.row_values(record), by_value)
    np.testing.assert_array_equal(LAYOUT.records_matrix([record])[0], LAYOUT.matrix(frame)[0])


def test_a_record_with_a_word_for_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="could not convert"):
        LAYOUT.row_values({"orders_total": "many"})
