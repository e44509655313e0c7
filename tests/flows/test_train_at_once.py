"""The train flow with several models at once: started in order, at most so many at a time,
summarised in order; an optional model the data cannot train is skipped; after a failure
nothing more starts, what runs finishes, and the failure is raised."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from prefect import task
from prefect.cache_policies import NO_CACHE

import flows.train
from models.spec import SplitError
from training.report import ModelSummary

pytestmark = pytest.mark.slow

NAMES = ["delay_risk", "churn", "next_best_offer", "delivery_estimate", "outreach_uplift"]


@pytest.fixture
def several(tmp_path, monkeypatch, prefect_harness):
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AFTERSALE_TRAIN_ISOLATED", "true")
    monkeypatch.setenv("AFTERSALE_TRAIN_PROCESSES", "2")


def standing_in(monkeypatch, seconds: dict[str, float], errors: dict[str, Exception]):
    """A train task in place of the flow's, recording when each model started and ended
    and how many ran at once; it sleeps `seconds[name]` and raises `errors[name]`."""
    log: list[tuple[str, str]] = []
    lock = threading.Lock()
    running = [0, 0]  # now, most

    @task(cache_policy=NO_CACHE)
    def train_model(name, tracking_uri=None, test_fraction=None, marked=False):
        with lock:
            log.append(("start", name))
            running[0] += 1
            running[1] = max(running)
        try:
            time.sleep(seconds.get(name, 0.2))
            if name in errors:
                raise errors[name]
            return ModelSummary(
                name, "AUC", 0.8, 0.7, None, None, None, None, None, None, False, "", None, 0.0, 1
            )
        finally:
            with lock:
                running[0] -= 1
                log.append(("end", name))

    monkeypatch.setattr(flows.train, "train_model", train_model)
    return log, running


def record_seconds(took: dict[str, float]) -> None:
    """A training run of each model in `took` in the data folder's tracking store, tagged
    with its seconds, as the train flow tags its runs."""
    import mlflow

    from aftersale.settings import get_settings
    from models.served.registry import tracking
    from training.due import tag_training_run
    from training.register import prepare_tracking_store

    uri = get_settings().tracking_uri
    prepare_tracking_store(uri)
    with tracking(uri):
        client = mlflow.MlflowClient()
        for name, seconds in took.items():
            run = client.create_run(client.create_experiment(name))
            tag_training_run(uri, run.info.run_id, pd.Timestamp("2025-06-30", tz="UTC"), seconds)


def test_models_train_two_at_a_time_and_are_summarised_in_order(several, monkeypatch) -> None:
    log, running = standing_in(monkeypatch, {"delay_risk": 1.0}, {})
    summaries = flows.train.train()
    assert [s.name for s in summaries] == NAMES
    assert running[1] == 2
    starts = [n for kind, n in log if kind == "start"]
    # The first two are started together, the rest one by one as one ends.
    assert set(starts[:2]) == set(NAMES[:2])
    assert starts[2:] == NAMES[2:]
    # The second model does not wait for the first.
    assert log.index(("start", "churn")) < log.index(("end", "delay_risk"))


def test_an_optional_model_the_data_cannot_train_is_skipped(several, monkeypatch) -> None:
    standing_in(monkeypatch, {}, {"outreach_uplift": SplitError("too little outreach")})
    summaries = flows.train.train()
    assert [s.name for s in summaries] == NAMES[:-1]


def test_after_a_failure_nothing_starts_what_runs_ends_and_it_is_raised(
    several, monkeypatch
) -> None:
    log, _ = standing_in(
        monkeypatch,
        {"delay_risk": 0.1, "churn": 1.5},
        {"delay_risk": OSError("tracking store full"), "churn": SplitError("one class")},
    )
    with pytest.raises(OSError, match="tracking store full"):
        flows.train.train()
    assert sorted(n for kind, n in log if kind == "start") == ["churn", "delay_risk"]
    # churn ran to its own end (a required model's SplitError, raised after the first).
    assert ("end", "churn") in log


def test_the_models_whose_latest_training_took_longest_start_first(several, monkeypatch) -> None:
    took = {"delay_risk": 300.0, "churn": 250.0, "delivery_estimate": 900.0}
    took["outreach_uplift"] = 880.0
    record_seconds(took)
    # The window runs on while the others start one after another in the offer model's
    # slot: two models handed to the task runner at the same moment (two slots freed at
    # once) may be started by its threads in either order.
    log, _ = standing_in(monkeypatch, {"next_best_offer": 0.1, "delivery_estimate": 2.0}, {})
    summaries = flows.train.train()
    assert [s.name for s in summaries] == NAMES
    starts = [n for kind, n in log if kind == "start"]
    # The offer model has no record: it might be the longest. The rest by their seconds.
    assert set(starts[:2]) == {"next_best_offer", "delivery_estimate"}
    assert starts[2:] == ["outreach_uplift", "delay_risk", "churn"]


def test_with_every_model_s_time_recorded_they_train_in_balanced_lanes(
    several, monkeypatch
) -> None:
    """With the million-customer times recorded (here in milliseconds), uplift then offers
    train in one slot and the window, churn and delay risk in the other: when the window
    ends first, offers waits for its own lane rather than taking the window's slot."""
    took = {
        "outreach_uplift": 861.0,
        "delivery_estimate": 616.0,
        "next_best_offer": 373.0,
        "churn": 278.0,
        "delay_risk": 273.0,
    }
    record_seconds(took)
    log, running = standing_in(monkeypatch, {n: s / 1000 for n, s in took.items()}, {})
    summaries = flows.train.train()
    assert [s.name for s in summaries] == NAMES
    assert running[1] == 2
    starts = [n for kind, n in log if kind == "start"]
    assert set(starts[:2]) == {"outreach_uplift", "delivery_estimate"}
    # The window's slot goes on with churn and delay risk; offers follows uplift.
    assert log.index(("start", "churn")) > log.index(("end", "delivery_estimate"))
    assert log.index(("start", "delay_risk")) > log.index(("end", "churn"))
    assert log.index(("start", "next_best_offer")) > log.index(("end", "outreach_uplift"))
    assert log.index(("start", "churn")) < log.index(("start", "next_best_offer"))


def test_a_slot_whose_lane_is_done_takes_a_waiting_model(several, monkeypatch) -> None:
    """Recorded times that no longer hold: uplift's lane still waits on uplift when the
    other lane is done, so that slot starts offers, the model waiting there."""
    took = {n: 100.0 for n in NAMES}
    took["outreach_uplift"] = 300.0
    record_seconds(took)
    # Planned: uplift and one more (400 s) beside the other three (300 s). This night
    # uplift takes far longer than recorded.
    seconds = {n: 0.1 for n in NAMES}
    seconds["outreach_uplift"] = 2.0
    log, _ = standing_in(monkeypatch, seconds, {})
    flows.train.train()
    uplift_end = log.index(("end", "outreach_uplift"))
    # Every other model started (and ended) while uplift still ran.
    assert all(log.index(("end", n)) < uplift_end for n in NAMES if n != "outreach_uplift")
