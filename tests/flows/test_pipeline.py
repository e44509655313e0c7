"""The nightly pipeline on a small business: a first night, a rerun of the same day, a
failure injected into each stage, a run killed in the middle of training; then its schedule
on a real Prefect server: a night triggered through the server's API that catches up two
late days, a run for days already done that does nothing, and the weekly retrain."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aftersale.settings import get_settings
from features import versioned
from features.contract.io import read_validated
from features.ingest import ingested_through
from features.sources.simulator import simulate_cuts, simulate_until
from flows.pipeline import Night, PipelineError, pipeline
from models import MODELS
from models.served.retrain import MARKS_FILE, read_marks
from serving.queue import HISTORY_FILE, QUEUE_FILE
from training.due import DATA_END_TAG, TRAIN_SECONDS_TAG
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


# The business of the module: a history up to HISTORY_END, then two days' batches.
SIMULATION = {"customers": 400, "seed": 11}
HISTORY_END = date(2025, 12, 29)
DAYS = (HISTORY_END + timedelta(days=1), HISTORY_END + timedelta(days=2))


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    """The history up to HISTORY_END and, beside it, the batches of DAYS (`day-<n>`)."""
    root = tmp_path_factory.mktemp("business")
    days = [(root / f"day-{n}", "day", day) for n, day in enumerate(DAYS, start=1)]
    simulate_cuts([(root / "history", "history", HISTORY_END), *days], **SIMULATION)
    return root / "history"


@pytest.fixture(scope="module")
def first_night(data_dir, history) -> Night:
    return pipeline(source="folder", path=history)


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
    from training.due import champions_trained_through, tag_training_run

    uri = get_settings().tracking_uri
    for name, trained in champions_trained_through(uri, names).items():
        with tracking(uri):
            run_id = mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION).run_id
        tag_training_run(uri, run_id, trained - pd.Timedelta(days=1))


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
            tags = client.get_run(summary.run_id).data.tags
            assert tags[DATA_END_TAG]
            # What the next night's flow starts the longest models first by.
            assert float(tags[TRAIN_SECONDS_TAG]) > 0
    assert first_night.queue == settings.serving_dir / QUEUE_FILE
    assert versioned.current(settings.features_dir) == first_night.features
    assert not (settings.serving_dir / ".kept").exists()


def test_the_first_night_monitors_the_offer_model_on_its_newest_offers(first_night) -> None:
    """The offer champion's realised quality counts the logged offers of its newest labelled
    window and their acceptances as the raw `offers` table shows them."""
    from features.instants import watermark

    (result,) = [r for r in first_night.monitored if getattr(r, "model", None) == "next_best_offer"]
    quality = result.quality
    raw = read_validated(first_night.raw)
    offers = raw["offers"].to_pandas()
    ts = pd.to_datetime(offers["ts"], utc=True)
    accepted = pd.to_datetime(offers["accepted_ts"], utc=True)
    week = pd.Timedelta(days=7)
    # Labelled: the offer's week closed within the offers table and by the data's end.
    known = (ts + week <= max(ts.max(), accepted.max())) & (
        ts + week <= watermark(raw, happened=True)
    )
    last = ts[known].max()
    window = known & (ts > last - pd.Timedelta(days=28)) & (ts <= last)
    assert quality["rows"] == int(window.sum())
    took = accepted.notna() & (accepted < ts + week)
    assert quality["positive_rate"] == pytest.approx(float(took[window].mean()))
    assert 0.5 < quality["roc_auc"] <= 1
    assert {"category", "offer_type"} <= set(result.table["segment"].str.split("=").str[0])
    # Its policy is valued on its newest closed offers, beside its own test value.
    assert 0 < quality["policy_rows"] <= quality["rows"]
    assert quality["policy_value_dr_low"] <= quality["policy_value_dr"]
    assert quality["policy_value_dr"] <= quality["policy_value_dr_high"]
    assert np.isfinite(quality["test_policy_value_dr"])


def test_the_first_night_publishes_the_delivery_windows_offsets(first_night) -> None:
    """The monitor stage fed the outcomes known by the night's end through the window
    champion's adaptive state and published its offsets, which the service then serves."""
    from features.instants import watermark
    from models.served.window import OFFSETS_FOLDER, read_published_offsets
    from serving.runtime import Runtime

    settings = get_settings()
    version = champion_versions(settings.tracking_uri, ["delivery_estimate"])["delivery_estimate"]
    published = read_published_offsets(settings.serving_dir / OFFSETS_FOLDER, version)
    assert published is not None
    raw = read_validated(first_night.raw)
    assert published.updated_ts <= watermark(raw, happened=True)
    assert published.offsets.method == "adaptive"
    info = Runtime.start(settings).models_info()
    assert info.window_calibration.startswith("adaptive, updated")
    # Batch scoring reads the same offsets the service serves.
    from flows.score_batch import load_models

    loaded = load_models.fn(settings)["delivery_estimate"]
    assert loaded.version == version
    assert loaded.model.offsets == published.offsets


def test_rerunning_the_day_gives_the_same_queue_and_history(first_night, history) -> None:
    before = batch_frames()
    again = pipeline(source="folder", path=history)
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
    first_night, history, monkeypatch
) -> None:
    skip_monitor(monkeypatch)
    path = mark(["churn"])
    age_champions(["churn"])
    night = pipeline(source="folder", path=history)
    assert night.due["churn"] == "marked: test"
    assert [summary.name for summary in night.models] == ["churn"]
    assert read_marks(path.parent) == {}
    # Marked, it serves its refit: fitted through its test window, which it has now seen.
    import mlflow

    from models.served.registry import tracking

    with tracking(get_settings().tracking_uri):
        params = mlflow.MlflowClient().get_run(night.models[0].run_id).data.params
    assert params["refit"] == "True"
    assert params["served_seen_end"] == params["split_test_end"]


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
    first_night, history, monkeypatch, stage, inject
) -> None:
    before = serving_now()
    marks = read_marks(get_settings().monitoring_dir)
    inject(monkeypatch)
    with pytest.raises(PipelineError, match=f"stage {stage} failed") as failed:
        pipeline(source="folder", path=history)
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


def test_a_failed_monitor_does_not_fail_the_night(first_night, history, monkeypatch) -> None:
    import flows.pipeline as flow

    before = batch_frames()

    def broken(*args, **kwargs):
        raise ValueError("too little data")

    monkeypatch.setattr(flow, "monitor", broken)
    night = pipeline(source="folder", path=history)
    assert night.monitor_error == "ValueError: too little data"
    assert night.monitored == []
    after = batch_frames()
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)


def test_a_night_killed_while_training_and_rerun_gives_the_same_result(
    first_night, history, monkeypatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    skip_monitor(monkeypatch)
    # Marked only to be due: retrained as routine retrains are, on the same data they do not
    # replace their champions, whatever ran before (a marked one would serve its refit).
    monkeypatch.setenv("AFTERSALE_REFIT_MARKED", "false")
    monkeypatch.setenv("AFTERSALE_MARKED_GATE_MARGIN", "0")
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
        f"    pipeline(source='folder', path=Path({str(history)!r}))\n"
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
    night = pipeline(source="folder", path=history)
    assert {"delay_risk", "churn"} <= set(night.due)
    assert read_marks(path.parent) == {}
    after = batch_frames()
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)
    assert not after[HISTORY_FILE]["outreach_id"].duplicated().any()


# --- The schedule on a real Prefect server ---------------------------------------------------

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def wait_until(check, what: str, seconds: float, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert process.poll() is None, f"{what}: the process ended\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.5)


# The answers on which Prefect's own client tries again: the server's SQLite database is
# busy under load, and it says so with a 503.
BUSY = {429, 502, 503}


def api(method: str, url: str, **kwargs) -> httpx.Response:
    """One call to the Prefect server's API, tried again on a busy answer as Prefect's
    client does, then raised on any error."""
    kwargs.setdefault("timeout", 10)
    for attempt in range(8):
        answer = httpx.request(method, url, **kwargs)
        if answer.status_code not in BUSY:
            break
        time.sleep(min(0.5 * 2**attempt, 8))
    return answer.raise_for_status()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A Prefect server on a free loopback port (`prefect server start`), stopped
    afterwards: its API URL and the environment that points a process at it."""
    home = tmp_path_factory.mktemp("prefect_home")
    url = f"http://127.0.0.1:{free_port()}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    log = home / "server.log"
    port = url.rsplit(":", 1)[1].split("/")[0]
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, "the Prefect server", 180, process, log)
        yield url, env | {"PREFECT_API_URL": url}
    finally:
        stop(process)


@pytest.fixture(scope="module")
def scheduled(first_night, prefect_server, data_dir, history, tmp_path_factory):
    """`aftersale schedule` serving the deployments on the server, the inbox holding both
    late days; the schedules' times are half a day away, so only triggered runs run."""
    url, env = prefect_server
    inbox = tmp_path_factory.mktemp("inbox")
    for n in (1, 2):
        shutil.copytree(history.parent / f"day-{n}", inbox / f"day-{n}")
    later = datetime.now(UTC) + timedelta(hours=12)
    env = env | {
        "AFTERSALE_DATA_DIR": str(data_dir),
        "AFTERSALE_INBOX_DIR": str(inbox),
        "AFTERSALE_NIGHTLY_AT": f"{later:%H:%M}",
        "AFTERSALE_RETRAIN_AT": f"{later:%a %H:%M}".lower(),
        "AFTERSALE_SCHEDULE_TIMEZONE": "Europe/Berlin",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    log = data_dir.parent / "schedule.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "aftersale"), "schedule"],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def deployed() -> bool:
        names = ("nightly/nightly", "retrain/weekly-retrain")
        return all(
            httpx.get(f"{url}/deployments/name/{name}", timeout=5).status_code == 200
            for name in names
        )

    try:
        wait_until(deployed, "the deployments", 180, process, log)
        yield {"url": url, "env": env, "inbox": inbox, "log": log, "process": process}
    finally:
        stop(process)


def trigger(url: str, deployment: str, process: subprocess.Popen, log: Path) -> dict:
    """Create a run of `deployment` through the server's API and wait for its end."""
    found = api("GET", f"{url}/deployments/name/{deployment}")
    run = api("POST", f"{url}/deployments/{found.json()['id']}/create_flow_run", json={})

    def ended() -> dict | None:
        state = api("GET", f"{url}/flow_runs/{run.json()['id']}").json()
        return state if state["state_type"] in {"COMPLETED", "FAILED", "CRASHED"} else None

    return wait_until(ended, f"the run of {deployment}", 600, process, log)


def pipeline_runs(url: str) -> list[dict]:
    """The server's runs of the flow `pipeline`, oldest first."""
    answer = api(
        "POST",
        f"{url}/flow_runs/filter",
        json={"flows": {"name": {"any_": ["pipeline"]}}, "sort": "START_TIME_ASC"},
    )
    return answer.json()


def test_the_schedules_are_on_the_server_in_their_time_zone(scheduled) -> None:
    url, env = scheduled["url"], scheduled["env"]
    hour, minute = (int(x) for x in env["AFTERSALE_NIGHTLY_AT"].split(":"))
    nightly = api("GET", f"{url}/deployments/name/nightly/nightly").json()
    (entry,) = nightly["schedules"]
    assert entry["schedule"]["cron"] == f"{minute} {hour} * * *"
    assert entry["schedule"]["timezone"] == "Europe/Berlin"
    weekly = api("GET", f"{url}/deployments/name/retrain/weekly-retrain").json()
    day = weekly["schedules"][0]["schedule"]["cron"].split()[-1]
    assert day == str(
        ["sun", "mon", "tue", "wed", "thu", "fri", "sat"].index(env["AFTERSALE_RETRAIN_AT"][:3])
    )


def test_a_triggered_night_two_days_late_catches_up_both_days_in_order(scheduled) -> None:
    url = scheduled["url"]
    settings = get_settings()
    assert ingested_through(settings.raw_root) == HISTORY_END
    run = trigger(url, "nightly/nightly", scheduled["process"], scheduled["log"])
    assert run["state_type"] == "COMPLETED", scheduled["log"].read_text()[-3000:]
    nights = pipeline_runs(url)
    assert [Path(r["parameters"]["path"]).name for r in nights] == ["day-1", "day-2"]
    assert all(r["state_type"] == "COMPLETED" for r in nights)
    raw = versioned.current(settings.raw_root)
    assert list(versioned.metadata(raw)["days"]) == [d.isoformat() for d in DAYS]
    assert ingested_through(settings.raw_root) == DAYS[-1]
    # The data now equal the history written at once up to the last day.
    whole = get_settings().data_dir.parent / "through_last_day"
    simulate_until(whole, DAYS[-1], **SIMULATION)
    expected = read_validated(whole)
    current = read_validated(raw)
    for name, table in expected.items():
        assert current[name].num_rows == table.num_rows, name
    frames = batch_frames()
    assert not frames[HISTORY_FILE]["outreach_id"].duplicated().any()
    queue = frames[QUEUE_FILE]
    assert not queue["rank"].duplicated().any()
    meta = json.loads(
        pq.read_schema(get_settings().serving_dir / QUEUE_FILE).metadata[b"aftersale"]
    )
    assert pd.Timestamp(meta["as_of"]).date() == DAYS[-1]


def test_a_run_for_days_already_done_does_nothing(scheduled) -> None:
    url = scheduled["url"]
    before = serving_now()
    nights = len(pipeline_runs(url))
    run = trigger(url, "nightly/nightly", scheduled["process"], scheduled["log"])
    assert run["state_type"] == "COMPLETED"
    assert len(pipeline_runs(url)) == nights
    assert serving_now() == before


def test_the_command_line_uses_the_configured_server_and_starts_none(scheduled) -> None:
    url, env = scheduled["url"], scheduled["env"]

    def nightly_runs() -> int:
        answer = api(
            "POST", f"{url}/flow_runs/count", json={"flows": {"name": {"any_": ["nightly"]}}}
        )
        return answer.json()

    runs = nightly_runs()
    done = subprocess.run(
        [str(BIN / "aftersale"), "nightly"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "nothing to run: the data end on" in done.stdout
    assert "temporary server" not in done.stdout + done.stderr
    assert nightly_runs() == runs + 1


def test_schedule_without_a_server_says_what_to_set(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["AFTERSALE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [str(BIN / "aftersale"), "schedule"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "PREFECT_API_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_weekly_retrain_trains_every_model_and_scores_again(scheduled) -> None:
    import mlflow

    from models.served.registry import tracking

    url = scheduled["url"]
    settings = get_settings()
    champions = champion_versions(settings.tracking_uri, MODELS)
    run = trigger(url, "retrain/weekly-retrain", scheduled["process"], scheduled["log"])
    assert run["state_type"] == "COMPLETED", scheduled["log"].read_text()[-3000:]
    with tracking(settings.tracking_uri):
        client = mlflow.MlflowClient()
        for name in ("delay_risk", "churn"):
            versions = client.search_model_versions(f"name='{name}'")
            # A new version of each required model went through the gate.
            assert max(int(v.version) for v in versions) > int(champions[name])
    answer = api(
        "POST",
        f"{url}/flow_runs/filter",
        json={"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}},
    )
    children = {child["name"]: child for child in answer.json()}
    flows = api("POST", f"{url}/flows/filter", json={}).json()
    names = {f["id"]: f["name"] for f in flows}
    ran = sorted(names[child["flow_id"]] for child in children.values())
    assert ran == ["score_batch", "train"]
    assert all(child["state_type"] == "COMPLETED" for child in children.values())
