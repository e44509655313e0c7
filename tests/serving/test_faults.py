"""Faults the service and the batch survive, each injected for real.

- The MLflow registry is down at start-up: the service starts from its last local copy of
  the champions and says so on /v1/models.
- A champion's artefact is corrupted (a required model's): the old champion keeps serving,
  and the error is reported on /v1/models and in the log.
- The disk fills while the queue is written: the previous queue stays, whole, and nothing
  half-written is visible.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models.served import registry
from serving import queue as queue_file
from serving.runtime import CHAMPION_COPIES, CHURN_MODEL, DELAY_MODEL, Runtime

pytestmark = pytest.mark.slow


def _dead_registry() -> str:
    """An HTTP tracking URI where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _booster(runtime: Runtime, name: str) -> str:
    return runtime.models[name].model.booster.model_to_string()


@pytest.fixture
def settings(trained_registry):
    """The trained registry's settings, with its champions' local copies removed after."""
    copies = trained_registry.serving_dir / CHAMPION_COPIES
    shutil.rmtree(copies, ignore_errors=True)
    yield trained_registry
    shutil.rmtree(copies, ignore_errors=True)


def test_without_the_registry_the_service_starts_from_its_local_copies(
    settings, monkeypatch
) -> None:
    first = Runtime.start(settings)
    assert first.models_info().fallbacks == {}
    copies = settings.serving_dir / CHAMPION_COPIES
    for name in (DELAY_MODEL, CHURN_MODEL):
        current = json.loads((copies / name / registry.CURRENT_COPY).read_text())
        assert current["version"] == first.models[name].version

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = settings.model_copy(update={"mlflow_tracking_uri": _dead_registry()})
    with pytest.raises(registry.ModelUnavailableError, match="unreachable"):
        # Without local copies there is nothing to start from: a named error.
        registry.load_champion(CHURN_MODEL, down.tracking_uri)
    # `aftersale serve` asks the same before it starts the server: the copies stand in.
    copies = settings.serving_dir / CHAMPION_COPIES
    assert registry.unservable(CHURN_MODEL, down.tracking_uri, copies) is None
    assert "no local copy" in registry.unservable(CHURN_MODEL, down.tracking_uri, None)
    assert registry.unservable(CHURN_MODEL, settings.tracking_uri, copies) is None
    _serve_starts(down, monkeypatch)
    started = Runtime.start(down)
    info = started.models_info()
    assert set(info.fallbacks) == {DELAY_MODEL, CHURN_MODEL}
    assert all("registry is unreachable" in why for why in info.fallbacks.values())
    for name in (DELAY_MODEL, CHURN_MODEL):
        assert started.models[name].version == first.models[name].version
        assert _booster(started, name) == _booster(first, name)


def _serve_starts(settings, monkeypatch) -> None:
    """`aftersale serve` gets as far as starting the server (its checks pass on the local
    copies), with the registry's retries bounded for the server too."""
    from typer.testing import CliRunner

    from aftersale import cli

    class StartedError(Exception):
        pass

    def started(*args) -> None:
        raise StartedError

    monkeypatch.setattr(cli.os, "execv", started)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("AFTERSALE_MLFLOW_TRACKING_URI", settings.tracking_uri)
    result = CliRunner().invoke(cli.app, ["serve", "--port", "1"])
    assert isinstance(result.exception, StartedError), result.output
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def _register_corrupted(settings, name: str, folder: Path) -> str:
    """A new version of `name` whose artefact is a truncated copy of the champion's, made
    champion; returns its version."""
    import mlflow

    corrupt = folder / "corrupted"
    champion = json.loads(
        (settings.serving_dir / CHAMPION_COPIES / name / registry.CURRENT_COPY).read_text()
    )
    source = settings.serving_dir / CHAMPION_COPIES / name / champion["version"] / "model"
    shutil.copytree(source, corrupt)
    damaged = 0
    for path in corrupt.rglob("*"):
        if path.is_file() and path.name != "MLmodel":
            path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
            damaged += 1
    assert damaged
    with registry.tracking(settings.tracking_uri):
        client = mlflow.MlflowClient()
        run_id = client.get_model_version(name, champion["version"]).run_id
        version = client.create_model_version(name, str(corrupt), run_id=run_id).version
        client.set_registered_model_alias(name, registry.CHAMPION, version)
    return str(version)


def test_a_corrupted_champion_leaves_the_old_one_serving(settings, tmp_path, caplog) -> None:
    import mlflow

    first = Runtime.start(settings)
    old = first.models[CHURN_MODEL].version
    broken = _register_corrupted(settings, CHURN_MODEL, tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger=registry.__name__):
            reloaded = Runtime.start(settings)
        assert reloaded.models[CHURN_MODEL].version == old
        assert _booster(reloaded, CHURN_MODEL) == _booster(first, CHURN_MODEL)
        why = reloaded.models_info().fallbacks[CHURN_MODEL]
        assert f"version {broken} cannot be loaded" in why
        assert DELAY_MODEL not in reloaded.models_info().fallbacks
        logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(f"version {broken} cannot be loaded" in m for m in logged), logged
        # The broken version left no copy behind; the old one is still the last good copy.
        copies = settings.serving_dir / CHAMPION_COPIES / CHURN_MODEL
        assert not (copies / broken).exists()
        current = json.loads((copies / registry.CURRENT_COPY).read_text())
        assert current["version"] == old
    finally:
        with registry.tracking(settings.tracking_uri):
            client = mlflow.MlflowClient()
            client.set_registered_model_alias(CHURN_MODEL, registry.CHAMPION, old)
            client.delete_model_version(CHURN_MODEL, broken)


def test_a_full_disk_leaves_the_previous_queue_whole(tmp_path, monkeypatch) -> None:
    before = pd.DataFrame({"rank": [1, 2], "customer_id": ["c1", "c2"]})
    path = queue_file.write_queue(before, tmp_path, {"queue_date": "2025-01-01"})
    stored = path.read_bytes()
    real_write = pq.write_table

    def fills_up(table, where, **kwargs):
        # Half the file reaches the disk, then there is no space left.
        real_write(table, where, **kwargs)
        Path(where).write_bytes(Path(where).read_bytes()[: Path(where).stat().st_size // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(queue_file.pq, "write_table", fills_up)
    after = pd.DataFrame(
        {"rank": np.arange(1, 1001), "customer_id": [f"c{i}" for i in range(1000)]}
    )
    with pytest.raises(OSError, match="No space left"):
        queue_file.write_queue(after, tmp_path, {"queue_date": "2025-01-02"})
    monkeypatch.setattr(queue_file.pq, "write_table", real_write)
    assert path.read_bytes() == stored
    assert sorted(p.name for p in tmp_path.iterdir()) == [queue_file.QUEUE_FILE]
    loaded = queue_file.QueueCache(tmp_path).get()
    assert loaded.meta["queue_date"] == "2025-01-01"
    assert len(loaded.frame) == 2


@pytest.fixture(scope="module")
def scored(trained_registry, tmp_path_factory, prefect_harness):
    """A copy of the trained data folder, scored once by the flow: the folder, the queue and
    history it wrote, and the Prefect API the commands below report to."""
    from prefect.settings import PREFECT_API_URL

    from flows.score_batch import score_batch

    folder = tmp_path_factory.mktemp("killed") / "data"
    shutil.copytree(trained_registry.data_dir, folder)
    shutil.rmtree(folder / "serving", ignore_errors=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        path = score_batch()
    serving = path.parent
    baseline = {
        name: pq.read_table(serving / name).to_pandas()
        for name in (queue_file.QUEUE_FILE, queue_file.HISTORY_FILE)
    }
    return folder, baseline, PREFECT_API_URL.value()


def _score_killed(folder: Path, api_url: str, when) -> None:
    """`aftersale score` in its own process, killed (SIGKILL) once `when()` holds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "AFTERSALE_DATA_DIR": str(folder), "PREFECT_API_URL": api_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "aftersale.cli", "score"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while not when() and process.poll() is None:
            assert time.monotonic() < deadline, "the command never reached the point"
            time.sleep(0.005)
        alive = process.poll() is None
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert alive, "the command ended by itself before it could be killed"


@pytest.mark.parametrize("point", ["scoring", "publishing"])
def test_a_killed_batch_rerun_gives_the_same_queue_and_no_duplicates(scored, point) -> None:
    from flows.score_batch import score_batch

    folder, baseline, api_url = scored
    serving = folder / "serving"
    queue_path = serving / queue_file.QUEUE_FILE
    stamp = queue_path.stat().st_mtime_ns
    log_file = folder / "logs" / "aftersale.log"
    logged = log_file.stat().st_size if log_file.exists() else 0

    def scoring() -> bool:
        # The run has started its stage: the log file has grown past its start.
        return log_file.exists() and "score: started" in log_file.read_text()[logged:]

    def publishing() -> bool:
        # The new queue is in place, its actions not yet recorded (or just being recorded).
        return queue_path.stat().st_mtime_ns != stamp

    _score_killed(folder, api_url, scoring if point == "scoring" else publishing)
    # What a scheduler may read meanwhile is a whole queue, old or new.
    pq.read_table(queue_path)
    assert not [p.name for p in serving.iterdir() if p.name.endswith(".tmp")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        score_batch()
    for name, expected in baseline.items():
        again = pq.read_table(serving / name).to_pandas()
        pd.testing.assert_frame_equal(again, expected, check_like=False)
    history = pq.read_table(serving / queue_file.HISTORY_FILE).to_pandas()
    assert not history["outreach_id"].duplicated().any()
