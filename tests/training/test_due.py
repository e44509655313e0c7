"""Which models the nightly pipeline retrains: the rule, the marks file, the registry's record."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from models.served.retrain import clear, read_marks
from training.due import (
    DATA_END_TAG,
    balanced_lanes,
    due_reasons,
    latest_train_seconds,
    longest_first,
    models_due,
    tag_training_run,
)

END = pd.Timestamp("2025-06-30T23:00:00Z")


@pytest.mark.parametrize(
    ("trained_through", "marks", "expected"),
    [
        ({}, {}, {"churn": "no champion"}),
        ({"churn": END - pd.Timedelta(days=6, hours=23)}, {}, {}),
        ({"churn": END - pd.Timedelta(days=7)}, {}, {"churn": "champion's data is 7 days old"}),
        (
            {"churn": END - pd.Timedelta(days=1)},
            {"churn": {"since": "2025-06-30", "reason": "drift"}},
            {"churn": "marked: drift"},
        ),
        # Rerunning the day the champion was trained on: the same data, the same model.
        ({"churn": END}, {"churn": {"since": "2025-06-30", "reason": "drift"}}, {}),
        ({"churn": None}, {}, {"churn": "champion's data end not recorded"}),
    ],
    ids=["no-champion", "six-days", "seven-days", "marked", "marked-same-day", "unrecorded"],
)
def test_due_reasons(trained_through, marks, expected) -> None:
    assert due_reasons(["churn"], trained_through, marks, END, period_days=7) == expected


def test_due_reasons_keep_the_order_given_and_leave_fresh_models_out() -> None:
    fresh = {"delay_risk": END, "churn": END - pd.Timedelta(days=30)}
    due = due_reasons(["next_best_offer", "delay_risk", "churn"], fresh, {}, END, 7)
    assert list(due) == ["next_best_offer", "churn"]


def test_marks_are_read_and_cleared_by_model(tmp_path) -> None:
    path = tmp_path / "retrain_due.json"
    assert read_marks(tmp_path) == {}
    marks = {
        "churn": {"since": "2025-06-30T00:00:00+00:00", "reason": "prediction drift"},
        "delay_risk": {"since": "2025-06-29T00:00:00+00:00", "reason": "AUC fell"},
    }
    path.write_text(json.dumps(marks))
    assert read_marks(tmp_path) == marks
    clear(tmp_path, "churn", "next_best_offer")
    assert read_marks(tmp_path) == {"delay_risk": marks["delay_risk"]}
    assert [p.name for p in tmp_path.iterdir()] == ["retrain_due.json"]


@pytest.mark.parametrize("text", ["not json", '["churn"]', '{"churn": "drift"}'])
def test_a_malformed_marks_file_is_named(tmp_path, text) -> None:
    path = tmp_path / "retrain_due.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"retrain_due\.json"):
        read_marks(tmp_path)


def test_models_due_reads_the_registry_and_the_marks(tmp_path, monkeypatch) -> None:
    import mlflow

    from aftersale.settings import get_settings
    from models.served.registry import CHAMPION, tracking

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AFTERSALE_RETRAIN_DAYS", "3")
    monkeypatch.delenv("AFTERSALE_MLFLOW_TRACKING_URI", raising=False)
    settings = get_settings()
    names = ["delay_risk", "churn"]
    assert models_due(settings, names, END) == {n: "no champion" for n in names}

    (tmp_path / "mlflow").mkdir()
    with tracking(settings.tracking_uri):
        client = mlflow.MlflowClient()
        for name, days in (("delay_risk", 2), ("churn", 3)):
            run = client.create_run(client.create_experiment(name))
            client.create_registered_model(name)
            version = client.create_model_version(name, str(tmp_path), run_id=run.info.run_id)
            client.set_registered_model_alias(name, CHAMPION, version.version)
            tag_training_run(settings.tracking_uri, run.info.run_id, END - pd.Timedelta(days=days))
            assert client.get_run(run.info.run_id).data.tags[DATA_END_TAG]
    assert models_due(settings, names, END) == {"churn": "champion's data is 3 days old"}
    settings.monitoring_dir.mkdir()
    (settings.monitoring_dir / "retrain_due.json").write_text(
        json.dumps({"delay_risk": {"since": END.isoformat(), "reason": "drift"}})
    )
    assert list(models_due(settings, names, END)) == names


def test_marked_are_the_due_models_the_monitor_marked() -> None:
    from training.due import marked

    end = pd.Timestamp("2025-06-30", tz="UTC")
    trained = {"delay_risk": end - pd.Timedelta(days=1), "churn": end - pd.Timedelta(days=30)}
    marks = {"delay_risk": {"since": "2025-06-29T00:00:00+00:00", "reason": "drift"}}
    due = due_reasons(["delay_risk", "churn", "next_best_offer"], trained, marks, end, 7)
    assert set(due) == {"delay_risk", "churn", "next_best_offer"}
    assert marked(due) == ["delay_risk"]


def test_the_longest_start_first_and_a_model_without_a_record_counts_as_longest() -> None:
    names = ["delay_risk", "churn", "next_best_offer", "delivery_estimate", "outreach_uplift"]
    seconds = {"delay_risk": 347.0, "churn": 322.0, "delivery_estimate": 935.0}
    seconds["outreach_uplift"] = 933.0
    assert longest_first(names, seconds) == [
        "next_best_offer",
        "delivery_estimate",
        "outreach_uplift",
        "delay_risk",
        "churn",
    ]
    # Equal records, or none at all, keep the order given.
    assert longest_first(names, {}) == names
    assert longest_first(["churn", "delay_risk"], {"churn": 5.0, "delay_risk": 5.0}) == [
        "churn",
        "delay_risk",
    ]


# Each model's training at a million customers, two at a time (seconds).
MILLION = {
    "outreach_uplift": 861.0,
    "delivery_estimate": 616.0,
    "next_best_offer": 373.0,
    "churn": 278.0,
    "delay_risk": 273.0,
}


def _longest_lane(lanes: list[list[str]], seconds: dict[str, float]) -> float:
    return max(sum(seconds[n] for n in lane) for lane in lanes)


def _best_by_brute_force(seconds: dict[str, float], lanes: int) -> float:
    import itertools

    names = list(seconds)
    best = float("inf")
    for choice in itertools.product(range(lanes), repeat=len(names)):
        loads = [0.0] * lanes
        for name, lane in zip(names, choice, strict=True):
            loads[lane] += seconds[name]
        best = min(best, max(loads))
    return best


def test_lanes_balance_the_recorded_seconds() -> None:
    """Two lanes of the million-customer times: uplift and offers beside the other three
    (1,234 s), where starting the longest first in whichever slot frees ends at 1,262 s."""
    lanes = balanced_lanes(list(MILLION), MILLION, 2)
    assert lanes == [
        ["outreach_uplift", "next_best_offer"],
        ["delivery_estimate", "churn", "delay_risk"],
    ]
    assert _longest_lane(lanes, MILLION) == 1234.0
    # Every model in exactly one lane, each lane longest first.
    assert sorted(n for lane in lanes for n in lane) == sorted(MILLION)
    for lane in lanes:
        assert lane == longest_first(lane, MILLION)


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_lanes_are_as_short_as_any_assignment(lanes) -> None:
    import numpy as np

    rng = np.random.default_rng(lanes)
    for _ in range(20):
        seconds = {f"m{k}": float(rng.integers(10, 1000)) for k in range(int(rng.integers(1, 8)))}
        plan = balanced_lanes(list(seconds), seconds, lanes)
        assert len(plan) <= lanes
        assert sorted(n for lane in plan for n in lane) == sorted(seconds)
        assert _longest_lane(plan, seconds) == _best_by_brute_force(seconds, lanes)


def test_lanes_need_every_model_s_record() -> None:
    """A model without a record has no known time: no plan (the flow then starts the
    longest first)."""
    known = {k: v for k, v in MILLION.items() if k != "next_best_offer"}
    assert balanced_lanes(list(MILLION), known, 2) is None
    # Fewer models than lanes: one lane each; no models: no lanes.
    assert balanced_lanes(["churn"], MILLION, 2) == [["churn"]]
    assert balanced_lanes([], MILLION, 2) == []
    with pytest.raises(ValueError, match="lanes"):
        balanced_lanes(["churn"], MILLION, 0)


def test_many_models_are_laned_longest_first_to_the_lane_that_ends_soonest(monkeypatch) -> None:
    import training.due

    monkeypatch.setattr(training.due, "MAX_PLANS", 1)
    lanes = balanced_lanes(list(MILLION), MILLION, 2)
    # Longest first to the emptier lane: uplift | window, offers (989) | churn (1,139) ...
    assert lanes == [
        ["outreach_uplift", "churn"],
        ["delivery_estimate", "next_best_offer", "delay_risk"],
    ]


def test_each_model_s_latest_recorded_training_seconds_are_read(tmp_path) -> None:
    import time

    import mlflow

    from models.served.registry import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert latest_train_seconds(uri, ["churn"]) == {}  # no store yet: none made
    assert not (tmp_path / "mlflow.db").exists()
    runs = [("delay_risk", 12.34), ("delay_risk", 30.0), ("delay_risk", None), ("churn", None)]
    with tracking(uri):
        client = mlflow.MlflowClient()
        for name, seconds in runs:
            found = client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else client.create_experiment(name)
            run = client.create_run(experiment)
            tag_training_run(uri, run.info.run_id, END, seconds)
            time.sleep(0.01)  # runs ordered by their start, in milliseconds
    names = ["delay_risk", "churn", "next_best_offer"]
    # delay risk's newest run with a record (the last has none); churn's run has no
    # record, and the offer model no run.
    assert latest_train_seconds(uri, names) == {"delay_risk": 30.0}
