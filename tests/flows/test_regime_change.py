"""A regime change, detected and repaired, on a small business through the real flows: the
simulator's carrier slowdown (`benchmarks.shock.SCENARIOS[0]`, ParcelOne's transit times
x1.8 from 2025-07-01, watched on delay risk) is simulated, ingested, built into features;
delay risk is trained the day before, monitored then and at each check after, and retrained
on the check that flags it, then monitored again (`benchmarks.shock.regime_change`).

Measured with check days (7, 14, 21) and a 28-day window: realised AUC before the shock, at
the flag, and on the 28 days of decisions after the retrain's data (measured once their labels
are in, 28 days after the retrain; on the data it saw, a refit would be judged on its own
fit); none flagged before the shock. The retrain the flag calls for is a marked one
(`flows.train.train`): it serves its refit on every labelled decision and passes the gate
within 0.005 AUC of the champion. Beside it, the same shock with a routine retrain (the time
split's model, which must beat the champion), measured the same way ("routine"):

| customers | seed | before | flagged | at the flag | retrain | after | below before | routine |
|---|---|---|---|---|---|---|---|---|
| 1,500 | 11 | 0.918 | 14 days | 0.888 | promoted | 0.909 | 0.009 | 0.898 (promoted) |
| 1,500 | 7 | 0.900 | 14 days | 0.877 | promoted | 0.862 | 0.038 | 0.849 (not promoted) |
| 1,500 | 3 | 0.914 | 21 days | 0.876 | promoted | 0.878 | 0.036 | 0.866 (promoted) |
| 3,000 | 11 | 0.900 | 14 days | 0.895 | promoted | 0.916 | -0.016 | 0.915 (not promoted) |
| 3,000 | 7 | 0.919 | 21 days | 0.885 | promoted | 0.918 | 0.000 | 0.915 (promoted) |

Each flag was the realised calibration error rising 0.03 or more above the tested one. The
marked retrain comes out ahead of the routine one in every run, by 0.001 to 0.013; the
target (within `AUC_TOLERANCE`, 0.02, of the level before) is met at the suite's seed and in
both runs at 3,000 customers, and missed by 0.016-0.018 at seeds 7 and 3 of 1,500, where a
window holds about 700 decisions and two or three weeks of the new regime are too little to
learn it from.
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


def test_the_retrain_restores_the_realised_auc(slowdown: dict) -> None:
    """The target: the retrain the flag calls for brings the realised AUC, on decisions after
    its data, back to within `AUC_TOLERANCE` of its level before the shock."""
    assert slowdown["retrained_promoted"] is True
    gap = slowdown["auc_before"] - slowdown["auc_after_retrain"]
    assert gap <= AUC_TOLERANCE, (slowdown["auc_before"], slowdown["auc_after_retrain"])
