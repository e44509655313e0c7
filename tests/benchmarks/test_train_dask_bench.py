"""The Dask training benchmark's verdicts: time against one machine's, AUC against its
model's on the same test rows."""

from __future__ import annotations

import pytest

from benchmarks.train_dask import MAX_AUC_GAP, MAX_SLOWDOWN, compared


def _run(value: float, seconds: float) -> dict:
    return {"model": "delay_risk", "value": value, "wall_seconds": seconds}


def test_a_dask_run_within_both_bounds_meets_them() -> None:
    found = compared(_run(0.83, 100.0), _run(0.83 - MAX_AUC_GAP / 2, 100.0 * MAX_SLOWDOWN))
    assert found["slowdown"] == pytest.approx(MAX_SLOWDOWN)
    assert found["auc_gap"] == pytest.approx(MAX_AUC_GAP / 2)
    assert (found["time_target"], found["auc_target"]) == ("met", "met")


@pytest.mark.parametrize("gap", [MAX_AUC_GAP * 1.5, -MAX_AUC_GAP * 1.5])
def test_a_slower_run_or_a_distant_auc_misses(gap: float) -> None:
    found = compared(_run(0.80, 50.0), _run(0.80 - gap, 50.0 * MAX_SLOWDOWN * 1.1))
    assert found["auc_gap"] == pytest.approx(gap)
    assert (found["time_target"], found["auc_target"]) == ("missed", "missed")


def test_a_failed_run_misses_both() -> None:
    found = compared(_run(0.8, 10.0), {"model": "delay_risk", "failed": 1, "wall_seconds": 3.0})
    assert found["slowdown"] is None
    assert (found["time_target"], found["auc_target"]) == ("missed", "missed")
