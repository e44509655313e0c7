"""The monitor's printed verdict tells a trending drift (which marks nothing alone) from one
that counts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aftersale.cli import _drift_verdict


def test_a_trending_drift_is_told_apart_and_a_segment_row_counts_plainly() -> None:
    table = pd.DataFrame(
        {
            "drifted": [True, True, True, False],
            # The whole window's rows carry a flag; a segment's row leaves it missing.
            "trending": [True, False, np.nan, True],
        }
    )
    verdicts = [_drift_verdict(row) for row in table.itertuples()]
    assert verdicts == ["[yellow]yes, trending[/yellow]", "[red]yes[/red]", "[red]yes[/red]", "no"]
    flags = table.iloc[:2].astype({"trending": bool})
    assert [_drift_verdict(row) for row in flags.itertuples()] == verdicts[:2]
