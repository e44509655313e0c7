"""The nightly pipeline on a small business: a first night, a rerun of the same day, a
failure injected into each stage, and a run killed in the middle of training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from aftersale.settings import get_settings
from features import versioned
from flows.pipeline import Night, PipelineError, pipeline
from models import MODELS
from models.served.retrain import MARKS_FILE, read_marks
from serving.queue import HISTORY_FILE, QUEUE_FILE
from training.due import DATA_END_TAG
from training.register import champion_versions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, prefect_harness):
    """A data folder for this module, selected through the environment."""
    folder = tmp_path_factory.mktemp("pipeline") / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        patch.delenv("AFTERSALE_MLFLOW_TRACKING_URI", raising=False)
        yield folder


@pytest.fixture(scope="module")
def first_night(data_dir, sim_dir) -> Night:
    return pipeline(source="folder", path=sim_dir)


def serving_now() -> dict[str, object]:
    """What serves: the raw and feature versions, the champions, the batch files' bytes."""
    settings = get_settings()
    serving = settings.serving_dir
    return {
        "raw": versioned.current(settings.raw_root),
        "features": versioned.current(settings.features_dir),
        "champions": champion_versions(settings.tracking_uri, MODELS),
        **{name: (serving / name).read_bytes() for name in (QUEUE_FILE, HISTORY_FILE)},
    }


def batch_frames() -> dict[str, pd.DataFrame]:
    serving = get_settings().serving_dir
    return {name: pq.read_table(serving / name).to_pandas() for name in (QUEUE_FILE, HISTORY_FILE)}


def age_champions(names: list[str]) -> None:
    """Record the champions as trained on data a day older than the current: a mark counts
    only on data newer than the champion's (a rerun of its own day would learn it again)."""
    import mlflow

    from models.served.registry import CHAMPION, tracking
    from training.due import champions_trained_through, record_data_end

    uri = get_settings().tracking_uri
    for name, trained in champions_trained_through(uri, names).items():
        with tracking(uri):
            run_id = mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION).run_id
        record_data_end(uri, run_id, trained - pd.Timedelta(days=1))


def mark(names: list[str]) -> Path:
    path = get_settings().monitoring_dir / MARKS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    marks = {n: {"since": "2025-01-01T00:00:00+00:00", "reason": "test"} for n in names}
    path.write_text(json.dumps(marks))
    return path


def test_a_first_night_trains_every_model_and_queues_the_day(first_night) -> None:
    import mlflow

    from models.served.registry import tracking

    settings = get_settings()
    assert first_night.due == dict.fromkeys(MODELS, "no champion")
    trained = {summary.name for summary in first_night.models}
    assert {"delay_risk", "churn"} <= trained
    champions = champion_versions(settings.tracking_uri, MODELS)
    assert all(champions[name] for name in trained)
    with tracking(settings.tracking_uri):
        client = mlflow.MlflowClient()
        for summary in first_night.models:
            assert client.get_run(summary.run_id).data.tags[DATA_END_TAG]
    assert first_night.queue == settings.serving_dir / QUEUE_FILE
    assert versioned.current(settings.features_dir) == first_night.features
    assert not (settings.serving_dir / ".kept").exists()


def test_rerunning_the_day_gives_the_same_queue_and_history(first_night, sim_dir) -> None:
    before = batch_frames()
    again = pipeline(source="folder", path=sim_dir)
    # The champions were trained on this very data: none is due (an optional model the
    # data cannot train has none, and is tried again).
    assert not set(again.due) & {summary.name for summary in first_night.models}
    assert again.models == []
    after = batch_frames()
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)
    assert not after[HISTORY_FILE]["outreach_id"].duplicated().any()
    assert not after[QUEUE_FILE]["rank"].duplicated().any()


def skip_monitor(monkeypatch) -> None:
    """The monitor (a minute on this business) is left out where a test is not about it."""
    import flows.pipeline as flow

    monkeypatch.setattr(flow, "monitor", lambda: [])


def test_a_marked_model_is_retrained_and_its_mark_cleared(
    first_night, sim_dir, monkeypatch
) -> None:
    skip_monitor(monkeypatch)
    path = mark(["churn"])
    age_champions(["churn"])
    night = pipeline(source="folder", path=sim_dir)
    assert night.due["churn"] == "marked: test"
    assert [summary.name for summary in night.models] == ["churn"]
    assert read_marks(path.parent) == {}


def fail_features(monkeypatch) -> None:
    """Materialisation fails once the features are published (no retries)."""
    import flows.build_features as step

    def broken(*args, **kwargs):
        raise OSError("online store unreachable")

    monkeypatch.setattr(step, "materialize", broken)
    monkeypatch.setattr(step, "materialize_online", step.materialize_online.with_options(retries=0))


def fail_train(monkeypatch) -> None:
    """Training churn moves its champion to a new version, then fails."""
    import mlflow

    import training.trainers as trainers
    from models.served.registry import CHAMPION, tracking

    mark(["churn"])

    def broken(spec, store, settings, options):
        with tracking(settings.tracking_uri):
            client = mlflow.MlflowClient()
            champion = client.get_model_version_by_alias(spec.name, CHAMPION)
            new = client.create_model_version(spec.name, champion.source, champion.run_id)
            client.set_registered_model_alias(spec.name, CHAMPION, new.version)
        raise OSError("tracking store full")

    monkeypatch.setattr(trainers, "train_model", broken)


def fail_score(monkeypatch) -> None:
    """The new queue is in place when recording its actions fails."""
    import serving.queue as queue

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(queue, "record_queued", broken)


@pytest.mark.parametrize(
    ("stage", "inject"),
    [("features", fail_features), ("train", fail_train), ("score", fail_score)],
)
def test_a_failed_stage_leaves_yesterdays_outputs_serving(
    first_night, sim_dir, monkeypatch, stage, inject
) -> None:
    before = serving_now()
    marks = read_marks(get_settings().monitoring_dir)
    inject(monkeypatch)
    with pytest.raises(PipelineError, match=f"stage {stage} failed") as failed:
        pipeline(source="folder", path=sim_dir)
    assert failed.value.stage == stage
    monkeypatch.undo()
    assert serving_now() == before
    if stage == "train":
        # Not retrained: the mark stays for the next night.
        assert "churn" in read_marks(get_settings().monitoring_dir)
        mark([])
    else:
        assert read_marks(get_settings().monitoring_dir) == marks
    assert not (get_settings().serving_dir / ".kept").exists()


def test_a_failed_monitor_does_not_fail_the_night(first_night, sim_dir, monkeypatch) -> None:
    import flows.pipeline as flow

    before = batch_frames()

    def broken(*args, **kwargs):
        raise ValueError("too little data")

    monkeypatch.setattr(flow, "monitor", broken)
    night = pipeline(source="folder", path=sim_dir)
    assert night.monitor_error == "ValueError: too little data"
    assert night.monitored == []
    after = batch_frames()
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)


def test_a_night_killed_while_training_and_rerun_gives_the_same_result(
    first_night, sim_dir, monkeypatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    skip_monitor(monkeypatch)
    settings = get_settings()
    expected = batch_frames()
    path = mark(["delay_risk", "churn"])
    age_champions(["delay_risk", "churn"])
    log_file = settings.data_dir / "logs" / "aftersale.log"
    logged = log_file.stat().st_size if log_file.exists() else 0
    code = (
        "from pathlib import Path\n"
        "from rich.console import Console\n"
        "from aftersale.console import StageDisplay, log_path, route_logs\n"
        "from aftersale.settings import get_settings\n"
        "logs = log_path(get_settings())\n"
        "route_logs(logs, verbose=False, console=Console(stderr=True))\n"
        "from flows.pipeline import pipeline\n"
        "with StageDisplay(Console(), logs):\n"
        f"    pipeline(source='folder', path=Path({str(sim_dir)!r}))\n"
    )
    env = {
        **os.environ,
        "AFTERSALE_DATA_DIR": str(settings.data_dir),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def training() -> bool:
        return log_file.exists() and "train delay_risk: started" in log_file.read_text()[logged:]

    deadline = time.monotonic() + 300
    try:
        while not training() and process.poll() is None:
            assert time.monotonic() < deadline, "the night never reached training"
            time.sleep(0.05)
        alive = process.poll() is None
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert alive, "the night ended by itself before it could be killed"
    night = pipeline(source="folder", path=sim_dir)
    assert {"delay_risk", "churn"} <= set(night.due)
    assert read_marks(path.parent) == {}
    after = batch_frames()
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)
    assert not after[HISTORY_FILE]["outreach_id"].duplicated().any()
