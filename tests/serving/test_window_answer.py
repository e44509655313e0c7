"""The instants of a delivery window are answered to the microsecond below them."""

from __future__ import annotations

import pandas as pd
import pytest

from serving.runtime import _microseconds


@pytest.mark.parametrize(
    "text",
    [
        "2025-06-01T12:34:56.123456789Z",
        "2025-03-30T01:59:59.999999999Z",
        "2025-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999999Z",
        "1960-05-01T08:00:00.000000500Z",
    ],
)
def test_an_instant_is_answered_to_the_microsecond_below_it(text: str) -> None:
    instant = pd.Timestamp(text)
    assert _microseconds(instant) == instant.floor("us").to_pydatetime()
