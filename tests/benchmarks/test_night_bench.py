"""The night benchmark's registry copy: a SQLite MLflow store copied to another folder reads
and writes only there, with the source gone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from benchmarks.night import copy_registry


def _client(folder: Path) -> MlflowClient:
    """A client of the store in `folder`, its registry included (whatever registry an
    earlier test set for the process)."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _store(folder: Path) -> tuple[str, str]:
    """A store in `folder` with one run, an artifact and a champion version; its run id and
    the version's source."""
    client = _client(folder)
    experiment = client.create_experiment(
        "churn", artifact_location=(folder / "artifacts" / "churn").as_uri()
    )
    run = client.create_run(experiment, tags={"data_end": "2025-12-29"})
    client.log_text(run.info.run_id, "trees", "model/booster.txt")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("churn")
    source = f"{run.info.artifact_uri}/model"
    version = client.create_model_version("churn", source, run_id=run.info.run_id)
    client.set_registered_model_alias("churn", "champion", version.version)
    return run.info.run_id, source


def test_a_copied_registry_serves_its_champion_from_its_own_folder(tmp_path: Path) -> None:
    source, target = tmp_path / "a" / "mlflow", tmp_path / "b" / "mlflow"
    source.mkdir(parents=True)
    run_id, version_source = _store(source)
    copy_registry(source, target)
    shutil.rmtree(source)

    client = _client(target)
    champion = client.get_model_version_by_alias("churn", "champion")
    assert champion.source == version_source.replace(str(source), str(target))
    assert champion.source.startswith(target.as_uri())
    run = client.get_run(run_id)
    assert run.data.tags["data_end"] == "2025-12-29"
    assert run.info.artifact_uri.startswith(target.as_uri())
    downloaded = client.download_artifacts(run_id, "model/booster.txt", str(tmp_path))
    assert Path(downloaded).read_text() == "trees"
    # A new run of the copy writes under the copy.
    experiment = client.get_experiment_by_name("churn")
    assert experiment.artifact_location.startswith(target.as_uri())
    later = client.create_run(experiment.experiment_id)
    client.log_text(later.info.run_id, "more trees", "model/booster.txt")
    assert list(target.rglob(f"{later.info.run_id}/**/booster.txt"))


def test_a_folder_without_a_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="holds no MLflow store"):
        copy_registry(tmp_path, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
