"""A regime change, detected and repaired, on a small business through the real flows: the
simulator's carrier slowdown (`benchmarks.shock.SCENARIOS[0]`, ParcelOne's transit times
x1.8 from 2025-07-01, watched on delay risk) is simulated, ingested, built into features;
delay risk is trained the day before, monitored then and at each check after, and retrained
on the check that flags it, then monitored again (`benchmarks.shock.regime_change`).

Measured with check days (7, 14, 21, 28) and a 28-day window (realised AUC before the
shock → at the flag → after the retrain; all without a flag before the shock):

| customers | seed | before | flagged after | at the flag | retrain | after | below before |
|---|---|---|---|---|---|---|---|
| 1,500 | 11 | 0.918 | 14 days | 0.888 | promoted | 0.889 | 0.029 |
| 1,500 | 7 | 0.900 | 14 days | 0.877 | not promoted | 0.877 | 0.023 |
| 1,500 | 3 | 0.914 | 21 days | 0.876 | promoted | 0.870 | 0.044 |
| 3,000 | 11 | 0.919 | 21 days | 0.885 | promoted | 0.891 | 0.028 |
| 3,000 | 7 | 0.900 | 14 days | 0.895 | not promoted | 0.895 | 0.005 |

Each flag was the realised calibration error rising 0.03 or more above the tested one. The
issue's target for the repair, a realised AUC after the retrain within `AUC_TOLERANCE`
(0.02) of the level before, was missed by every promoted retrain; it was met only where the
retrain was not promoted and the shock had cost 0.005 by the flag, i.e. nothing was
repaired. The retrain's time split keeps the newest labelled weeks, those after the shock,
in its test window, so it learns little of the new regime. The test therefore holds the
detection and the drop, and keeps the repair target as an expected failure (strict: the
day a retrain meets it, the test says so).
"""

from __future__ import annotations

import pytest

from benchmarks.shock import AUC_TOLERANCE, SCENARIOS, regime_change

pytestmark = pytest.mark.slow

# The test suite's usual seed (tests/conftest.py), not chosen for the outcome.
CUSTOMERS = 1_500
SEED = 11
CHECK_DAYS = (7, 14, 21)
WINDOW_DAYS = 28
# The slowdown is flagged by the second or third weekly check (14 or 21 days in the runs
# measured above).
DETECTED_WITHIN_DAYS = 21


@pytest.fixture(scope="module")
def slowdown(tmp_path_factory, prefect_harness) -> dict:
    """The carrier slowdown's figures on delay risk, run once for the module."""
    root = tmp_path_factory.mktemp("regime-change")
    with pytest.MonkeyPatch.context() as patch:
        # `regime_change` points AFTERSALE_DATA_DIR at its own folder; the patch restores it.
        patch.setenv("AFTERSALE_DATA_DIR", str(root / "data"))
        patch.delenv("AFTERSALE_MLFLOW_TRACKING_URI", raising=False)
        (figures,) = regime_change(
            root,
            CUSTOMERS,
            SCENARIOS[0],
            seed=SEED,
            check_days=CHECK_DAYS,
            window_days=WINDOW_DAYS,
        )
    return figures


def test_the_slowdown_is_flagged_in_time_and_its_quality_drop_is_seen(slowdown: dict) -> None:
    figures = slowdown
    assert figures["model"] == "delay_risk"
    assert "not_trained" not in figures, figures.get("not_trained")
    # The check the day before the shock flags nothing.
    assert figures["flagged_before"] == []
    assert figures["false_alarm"] is False
    assert figures["rows_before"] > 0
    detected = figures["detected_days_after"]
    assert detected is not None, figures["checks"]
    assert detected <= DETECTED_WITHIN_DAYS, figures["checks"]
    (flagging,) = [c for c in figures["checks"] if c["days_after"] == detected]
    assert flagging["flagged"]
    assert all(not c["flagged"] for c in figures["checks"] if c["days_after"] < detected)
    # The realised AUC where the monitor flags is below the level before the shock.
    assert flagging["realised_auc"] < figures["auc_before"], (figures["auc_before"], flagging)
    # The flag triggered a retrain through the champion gate, measured by the same monitor.
    assert figures["retrained_promoted"] is not None
    assert figures["auc_after_retrain"] is not None
    assert figures["target"] in ("met", "missed")


@pytest.mark.xfail(
    raises=AssertionError,
    strict=True,
    reason="measured at 1,500 customers, seed 11: realised AUC 0.918 before, 0.889 after "
    "the promoted retrain (0.029 below; target within 0.02); see the module's docstring",
)
def test_the_retrain_restores_the_realised_auc(slowdown: dict) -> None:
    """The issue's target: the retrain the flag calls for brings the realised AUC back to
    within `AUC_TOLERANCE` of its level before the shock."""
    assert slowdown["retrained_promoted"] is True
    gap = slowdown["auc_before"] - slowdown["auc_after_retrain"]
    assert gap <= AUC_TOLERANCE, (slowdown["auc_before"], slowdown["auc_after_retrain"])
