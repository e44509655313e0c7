"""The shock benchmark's reading of the monitor's checks: the first flagged check after the
shock, a flag before it as a false alarm, and the retrain's AUC against the level before."""

from __future__ import annotations

import math

import pytest

from benchmarks.shock import AUC_TOLERANCE, SCENARIOS, detection, repair


def _checks(*flags: list[str]) -> list[dict]:
    return [{"days_after": 7 * (i + 1), "flagged": reasons} for i, reasons in enumerate(flags)]


@pytest.mark.parametrize(
    ("before", "checks", "expected"),
    [
        ([], _checks([], [], ["its score drifted"], ["its score drifted"]), (21, False)),
        ([], _checks(["its score drifted"]), (7, False)),
        ([], _checks([], [], []), (None, False)),
        ([], [], (None, False)),
        (["40% of its features drifted"], _checks([], ["its score drifted"]), (14, True)),
        (["its score drifted"], _checks([], []), (None, True)),
    ],
)
def test_detection_is_the_first_flagged_check_and_a_flag_before_is_a_false_alarm(
    before: list[str], checks: list[dict], expected: tuple[int | None, bool]
) -> None:
    found = detection(before, checks)
    assert (found["detected_days_after"], found["false_alarm"]) == expected


@pytest.mark.parametrize(
    ("before", "after", "gap", "target"),
    [
        (0.80, 0.79, 0.01, "met"),
        (0.80, 0.80 - AUC_TOLERANCE, AUC_TOLERANCE, "met"),
        (0.80, 0.75, 0.05, "missed"),
        (0.70, 0.75, -0.05, "met"),
    ],
)
def test_repair_measures_the_gap_to_the_level_before_the_shock(
    before: float, after: float, gap: float, target: str
) -> None:
    found = repair(before, after)
    assert found["auc_gap"] == pytest.approx(gap)
    assert found["target"] == target


@pytest.mark.parametrize(("before", "after"), [(0.8, None), (math.nan, 0.8), (0.8, math.nan)])
def test_repair_without_both_figures_is_not_measured(before: float, after: float | None) -> None:
    assert repair(before, after) == {"auc_gap": None, "target": "not measured"}


def test_each_named_shock_is_watched_on_a_monitored_model() -> None:
    from training.monitor import SEGMENTS

    names = [scenario.name for scenario in SCENARIOS]
    assert names == ["carrier_slowdown", "region_opening", "price_change"]
    assert all(set(scenario.models) <= set(SEGMENTS) for scenario in SCENARIOS)
