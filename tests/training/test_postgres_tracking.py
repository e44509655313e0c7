"""MLflow on PostgreSQL: a real PostgreSQL server, an `mlflow server` backed by it that
serves the artifacts itself, training logging and registering through it, the champion gate
judging against the champion it loads from it, and the service answering from it."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import psycopg
import pytest

from aftersale.settings import Settings
from features.build.parallel import watermark_of
from features.build.tables import build_feature_tables, publish_tables
from features.store.config import feature_store
from features.store.sync import apply_definitions, materialize
from models.churn import SPEC as CHURN
from models.delay_risk import SPEC as DELAY
from models.served.registry import CHALLENGER, CHAMPION
from training.binary import train
from training.data import training_data
from training.trainer import TrainOptions

pytestmark = pytest.mark.slow

DATABASE = "mlflow"
DATABASE_USER = "aftersale"
# PostgreSQL refuses to run as root; as root, its programs run as the Debian package's user.
SERVER_USER = "postgres"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_bin() -> Path:
    """The newest installed PostgreSQL's programs (Debian keeps them off PATH)."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0,
    )
    if not found:
        pytest.fail(
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb "
            "(.ci/run installs it: apt-get install postgresql)"
        )
    return found[-1]


def _server_account() -> dict[str, int | list[int]]:
    """`subprocess` arguments that run PostgreSQL's programs as an unprivileged user."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam(SERVER_USER)
    except KeyError:
        pytest.fail(f"running as root, and no {SERVER_USER!r} user to run PostgreSQL as")
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _wait_ready(
    process: subprocess.Popen, url: str, log_path: Path, what: str, timeout_s: float = 180
) -> None:
    """Wait until `url` answers 200; fail with the process's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited: {log_path.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} was not ready in {timeout_s:.0f} s: {log_path.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    """Stop a server started in its own process group, workers included."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass(frozen=True)
class Database:
    """An empty database on a running PostgreSQL server."""

    port: int

    @property
    def url(self) -> str:
        """libpq's connection URI (psycopg, psql)."""
        return f"postgresql://{DATABASE_USER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def sqlalchemy_url(self) -> str:
        """SQLAlchemy's URL with the psycopg driver, as MLflow's backend store takes it."""
        return self.url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Database]:
    """A PostgreSQL server on a free loopback port with one empty database, for the module.
    The server is stopped and its folder removed on exit."""
    bin_dir = _postgres_bin()
    account = _server_account()
    # Not under pytest's tmp folder: that one is private to the user running the tests.
    folder = Path(tempfile.mkdtemp(prefix="aftersale-pg-"))
    if account:
        os.chown(folder, account["user"], account["group"])
    data, log_path, port = folder / "data", folder / "server.log", _free_port()

    def postgres_program(program: str, *args: str) -> None:
        done = subprocess.run(
            [str(bin_dir / program), *args], cwd=folder, capture_output=True, text=True, **account
        )
        if done.returncode != 0:
            server_log = log_path.read_text() if log_path.exists() else ""
            pytest.fail(f"{program} failed: {done.stdout}{done.stderr}{server_log}")

    try:
        postgres_program(
            *["initdb", "-D", str(data), "-U", DATABASE_USER, "--auth=trust"],
            *["--encoding=UTF8", "--no-sync", "--no-instructions"],
        )
        # Throwaway data: no durability needed, and nothing listens beyond loopback.
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        postgres_program(
            "pg_ctl", "start", "-D", str(data), "-l", str(log_path), "-w", "-o", options
        )
        try:
            postgres_program(
                "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", DATABASE_USER, DATABASE
            )
            yield Database(port)
        finally:
            postgres_program("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class TrackingServer:
    """A running `mlflow server`."""

    uri: str
    database: Database
    artifacts: Path


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory) -> Iterator[TrackingServer]:
    """`mlflow server` on a free loopback port, backed by the PostgreSQL database and serving
    the artifacts from a tmp folder itself, for the module."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    artifacts, log_path, port = folder / "artifacts", folder / "server.log", _free_port()
    uri = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                *[sys.executable, "-m", "mlflow", "server"],
                *["--backend-store-uri", postgres.sqlalchemy_url],
                *["--artifacts-destination", str(artifacts), "--serve-artifacts"],
                *["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            ],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Aftersale runs no MLflow jobs (GenAI evaluation): no job runner to start.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            # Its own process group: the server's workers stop with it.
            start_new_session=True,
        )
    try:
        _wait_ready(process, f"{uri}/health", log_path, "mlflow server")
        yield TrackingServer(uri, postgres, artifacts)
    finally:
        _stop(process)


def _client(server: TrackingServer) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)


@pytest.fixture(scope="module")
def built(sim_dir, sim_tables, tracking_server, tmp_path_factory):
    """A Feast store over the small simulated business, materialised up to the data's end,
    with settings pointing at the tracking server."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("postgres_tracking"),
        mlflow_tracking_uri=tracking_server.uri,
        as_of=watermark_of(sim_dir, happened=True).to_pydatetime(),
    )
    assert settings.artifact_root is None
    publish_tables(build_feature_tables(sim_tables), settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    materialize(store, settings.as_of)
    return settings, store


@pytest.fixture(scope="module")
def champions(built, sim_tables, tracking_server):
    """The first training runs of the two served classifiers, logged to the server."""
    settings, store = built
    options = TrainOptions(tables=sim_tables, tracking_uri=tracking_server.uri, explain_rows=50)
    return {spec.name: train(spec, store, settings, options) for spec in (DELAY, CHURN)}


def test_first_runs_are_champions_on_the_server(champions, tracking_server) -> None:
    client = _client(tracking_server)
    for name, result in champions.items():
        assert result.promotion.promoted, result.promotion.reason
        assert result.promotion.reason == "no champion yet"
        assert result.version == "1"
        assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
    delay = champions[DELAY.name]
    run = client.get_run(delay.run_id)
    # The server keeps the artifacts (the client was given no folder of its own).
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert "data/features.json" in {f.path for f in client.list_artifacts(delay.run_id, "data")}
    assert any(tracking_server.artifacts.rglob("MLmodel"))
    # The registry is PostgreSQL's.
    with psycopg.connect(tracking_server.database.url) as connection:
        aliases = connection.execute(
            "select name, alias, version from registered_model_aliases order by name, alias"
        ).fetchall()
    assert (DELAY.name, CHAMPION, 1) in aliases
    assert (CHURN.name, CHAMPION, 1) in aliases


def test_service_loads_the_champion_from_the_server(
    champions, built, sim_tables, tracking_server
) -> None:
    from serving.scoring import load_champion

    _, store = built
    served = load_champion(DELAY.name, tracking_server.uri)
    assert served.version == "1"
    assert CHAMPION in served.aliases
    rows = training_data(DELAY, store, sim_tables).frame.head(50)
    np.testing.assert_allclose(
        served.model.predict_proba(rows),
        champions[DELAY.name].model.predict_proba(rows),
        rtol=0,
        atol=1e-12,
    )


def test_service_answers_with_the_servers_champions(
    champions, built, sim_tables, tracking_server
) -> None:
    """The service's runtime, configured by the environment alone, loads its champions from
    the tracking server and answers with them. (The runtime the service holds, not its ASGI
    app: BentoML registers its request metrics once per process, and the service tests
    already built one app in this process.)"""
    from aftersale.settings import get_settings
    from serving.runtime import Runtime

    settings, _ = built
    as_of = pd.Timestamp(settings.as_of)
    ships = sim_tables["shipments"].to_pandas()
    moving = ships[ships["delivered_ts"].isna() | (ships["delivered_ts"] > as_of)]
    asked = moving["shipment_id"].head(5).tolist()
    assert asked
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(settings.data_dir))
        patch.setenv("AFTERSALE_MLFLOW_TRACKING_URI", tracking_server.uri)
        patch.setenv("AFTERSALE_AS_OF", as_of.isoformat())
        runtime = Runtime.start(get_settings())
        models = runtime.models_info().model_dump(mode="json")
        body = runtime.score_delay(asked).model_dump(mode="json")
    assert {(m["name"], m["version"]) for m in models["models"]} >= {
        (DELAY.name, "1"),
        (CHURN.name, "1"),
    }
    assert body["model"] == {"name": DELAY.name, "version": "1"}
    assert [r["shipment_id"] for r in body["results"]] == asked
    scored = [r for r in body["results"] if r["status"] == "ok"]
    assert scored
    assert all(0 <= r["probability"] <= 1 for r in scored)


def test_second_run_is_judged_against_the_champion_from_the_server(
    champions, built, sim_tables, tracking_server
) -> None:
    settings, store = built
    options = TrainOptions(tables=sim_tables, tracking_uri=tracking_server.uri, explain_rows=50)
    again = train(DELAY, store, settings, options)
    assert again.version == "2"
    assert again.promotion.champion_version == "1"
    # The same data and seed train the same model: the champion, loaded from the server
    # and scored on the new run's test rows, ties it and keeps its alias.
    assert again.promotion.champion_value == pytest.approx(again.promotion.challenger_value)
    assert not again.promotion.promoted, again.promotion.reason
    client = _client(tracking_server)
    assert str(client.get_model_version_by_alias(DELAY.name, CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias(DELAY.name, CHALLENGER).version) == "2"
