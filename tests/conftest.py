"""Shared fixtures: one small simulated business per test session."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

SIM_CUSTOMERS = 400
SIM_SEED = 11


@pytest.fixture(scope="session", autouse=True)
def _train_in_the_calling_process():
    """Flows train in the test's own process. A child process per model
    (`Settings.train_isolated`, the default) costs each training some five seconds of
    importing the stack again, dozens of times a run; the train flow's tests in
    `tests/flows/test_ingest_and_features.py` and `tests/flows/test_child.py` run the child."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_TRAIN_ISOLATED", "false")
        yield


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated business written as contract tables."""
    from features.sources.simulator import simulate

    out = tmp_path_factory.mktemp("sim") / "raw"
    simulate(out, customers=SIM_CUSTOMERS, seed=SIM_SEED)
    return out


@pytest.fixture(scope="session")
def sim_tables(sim_dir: Path) -> dict[str, pa.Table]:
    """The small simulated business, read and validated."""
    from features.contract.validate import load_folder

    tables, report = load_folder(sim_dir)
    assert report.ok, [str(v) for v in report.violations]
    return tables


@pytest.fixture(scope="session")
def trained_registry(sim_dir: Path, sim_tables: dict[str, pa.Table], tmp_path_factory):
    """A data folder holding the small business as published raw data and feature tables,
    with champions of delay risk and churn in its default SQLite registry; its settings."""
    from aftersale.settings import get_settings
    from features import versioned
    from features.build.tables import build_feature_tables, publish_tables
    from features.ingest import check, stage
    from features.sources.base import FolderSource
    from features.store.config import feature_store
    from features.store.sync import apply_definitions
    from models.churn import SPEC as CHURN
    from models.delay_risk import SPEC as DELAY
    from training.trainer import TrainOptions
    from training.trainers import train_model

    folder = tmp_path_factory.mktemp("registry") / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        patch.delenv("AFTERSALE_MLFLOW_TRACKING_URI", raising=False)
        settings = get_settings()
    staging = stage(FolderSource(sim_dir), settings.raw_root)
    check(staging)
    versioned.publish(staging)
    publish_tables(build_feature_tables(sim_tables), settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    options = TrainOptions(tables=sim_tables, explain_rows=200)
    for spec in (DELAY, CHURN):
        train_model(spec, store, settings, options)
    return settings


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for every flow run of the session (starting one costs
    tens of seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as patch:
        # Flow logic is also tested through `.fn()`, outside any flow run: its task logs
        # then have no run to attach to, which is expected there.
        patch.setenv("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="session")
def service_key() -> str:
    """An API key with every scope for the tests that call the service; the tests put
    `tests:score:read+outreach:read+admin:<key>` in AFTERSALE_API_KEYS."""
    return "aftersale-tests-key-0123456789abcdef"


@pytest.fixture(scope="session")
def reader_key() -> str:
    """An API key with the `score:read` scope only."""
    return "aftersale-tests-reader-0123456789abcdef"


@contextlib.contextmanager
def _served(env: dict[str, str], log_path: Path, ready_s: float = 240):
    """`bentoml serve serving.service:Aftersale` in its own process on a free loopback port,
    with `env` and a BentoML home of its own (its workers' metrics live there, so another
    server on the machine cannot reset them); yields its URL once `/readyz` answers 200 and
    stops it on exit."""
    import httpx

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = log_path.parent / "bentoml-home"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                *[sys.executable, "-m", "bentoml", "serve", "serving.service:Aftersale"],
                *["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(root)],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, "BENTOML_HOME": str(home)},
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + ready_s
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    pytest.fail(f"bentoml serve exited: {log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            else:
                pytest.fail("bentoml serve was not ready in time")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="session")
def serve_service():
    """Run the service in its own process: `with serve_service(env, log_path) as url: …`."""
    return _served


@pytest.fixture(scope="session")
def dask_cluster():
    """A Dask cluster of two worker processes of one thread each, and a client of its
    scheduler (skipped where `distributed` is not installed)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        distributed.Client(local, set_as_default=False) as client,
    ):
        yield local, client
