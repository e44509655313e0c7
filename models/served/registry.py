"""Where trained models are kept: the MLflow registry's names, aliases and champions.

Training registers versions and moves the `champion` alias (`training.register`); serving
and batch scoring load the champion through `load_champion`. The tracking URI is passed in
and set only for the duration of a call: nothing here touches MLflow's global state on
import, and the previous URIs are restored after.

Given a folder for local copies, each champion is loaded from a copy of its artefacts kept
there, and the copy of the last version that loaded is what serves when the registry cannot
be reached or the champion's artefact cannot be loaded (a corrupted file, an incompatible
version): the service starts, or keeps its champion on a reload, and says why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.served.atomic import write_json_atomic

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
# In a local copy: the model's artefacts, run artefacts beside them, and the copy's record.
COPY_MODEL = "model"
COPY_RECORD = "champion.json"
# In a model's copies folder: which version last loaded.
CURRENT_COPY = "current.json"
# Error codes of a registry that answers but has no such champion.
_NOT_REGISTERED = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class ModelUnavailableError(RuntimeError):
    """No champion of a model is registered, or none can be loaded."""


@dataclass(frozen=True)
class Champion:
    """A champion version as loaded.

    Attributes:
        name: Registered model name.
        version: Registry version.
        aliases: The version's aliases when it was loaded.
        run_id: The training run that logged it.
        folder: Its local copy (None without a copies folder): run artefacts asked for
            lie there by their artefact path.
        fallback: Why the local copy serves instead of the registry's champion (None when
            the registry's champion loaded).
    """

    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str
    folder: Path | None = None
    fallback: str | None = None


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` (tracking and registry) for the block only."""
    import mlflow

    before_tracking = mlflow.get_tracking_uri()
    before_registry = mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before_tracking)
        mlflow.set_registry_uri(before_registry)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _registered(name: str, tracking_uri: str) -> Champion:
    """The registry's champion version of `name`, not yet loaded.

    Raises:
        ModelUnavailableError: The registry answers and has no such champion.
        ConnectionError: The registry cannot be reached.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with tracking(tracking_uri):
            found = mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if error.error_code in _NOT_REGISTERED:
            raise ModelUnavailableError(f"no {CHAMPION} version of {name!r}: {error}") from error
        raise ConnectionError(_short(error)) from error
    except Exception as error:
        raise ConnectionError(_short(error)) from error
    return Champion(name, str(found.version), tuple(sorted(found.aliases)), found.run_id)


def _copy(champion: Champion, tracking_uri: str, copies: Path, run_artifacts: Sequence[str]):
    """The folder holding a local copy of the version's artefacts, made when missing."""
    import mlflow

    folder = copies / champion.name / champion.version
    if (folder / COPY_RECORD).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{champion.version}."))
    try:
        with tracking(tracking_uri):
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{champion.name}/{champion.version}",
                dst_path=str(scratch / COPY_MODEL),
            )
            for path in run_artifacts:
                # Kept by its artefact path: `folder / path` is the file.
                where = (scratch / path).parent
                where.mkdir(parents=True, exist_ok=True)
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"runs:/{champion.run_id}/{path}", dst_path=str(where)
                )
        record = {"version": champion.version, "aliases": list(champion.aliases)}
        write_json_atomic(scratch / COPY_RECORD, {**record, "run_id": champion.run_id})
        try:
            os.replace(scratch, folder)
        except OSError:
            # Another worker of the service made the same copy first.
            if not (folder / COPY_RECORD).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _load_copy(folder: Path):
    import mlflow

    return mlflow.pyfunc.load_model(str(folder / COPY_MODEL)).unwrap_python_model().model


def _last_good(name: str, copies: Path | None, why: str):
    """The local copy of the version that last loaded, with `why` it serves.

    Raises:
        ModelUnavailableError: There is no such copy, or it does not load either.
    """
    pointer = None if copies is None else copies / name / CURRENT_COPY
    if pointer is None or not pointer.is_file():
        raise ModelUnavailableError(f"{name}: {why}; no local copy to serve instead")
    version = json.loads(pointer.read_text())["version"]
    folder = copies / name / version
    try:
        record = json.loads((folder / COPY_RECORD).read_text())
        model = _load_copy(folder)
    except Exception as error:
        raise ModelUnavailableError(
            f"{name}: {why}; its local copy of version {version} does not load either "
            f"({_short(error)})"
        ) from error
    log.warning("%s: serving the local copy of version %s: %s", name, version, why)
    aliases = tuple(record.get("aliases", ()))
    champion = Champion(name, version, aliases, record.get("run_id", ""), folder, why)
    return champion, model


def answer_quickly() -> None:
    """Let a registry that is down cost seconds, not MLflow's minutes of retries, in this
    process and those it starts (unless the environment already says otherwise): the
    champions' local copies then serve."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def unservable(name: str, tracking_uri: str, copies: Path | None = None) -> str | None:
    """Why `load_champion` would find nothing of `name` to serve, asked of the registry
    without loading a model: None where the registry names a champion, or cannot be reached
    and a local copy stands in."""
    try:
        _registered(name, tracking_uri)
    except ModelUnavailableError as error:
        return str(error)
    except ConnectionError as error:
        if copies is not None and (copies / name / CURRENT_COPY).is_file():
            return None
        return f"{name}: the registry is unreachable ({error}) and no local copy serves"
    return None


def load_champion(
    name: str,
    tracking_uri: str,
    copies: Path | None = None,
    run_artifacts: Sequence[str] = (),
):
    """The champion's registry version and the model object its pyfunc wraps.

    Args:
        name: Registered model name.
        tracking_uri: The MLflow registry.
        copies: Folder of local copies (None: load from the registry, keep no copy).
        run_artifacts: Artefacts of the champion's run to keep in its local copy too.

    Raises:
        ModelUnavailableError: The model has no champion; or, with `copies`, the registry
            cannot be reached or the champion cannot be loaded, and no local copy can.
    """
    import mlflow

    try:
        champion = _registered(name, tracking_uri)
    except ConnectionError as error:
        if copies is None:
            raise ModelUnavailableError(f"{name}: registry unreachable ({error})") from error
        return _last_good(name, copies, f"the registry is unreachable ({error})")
    if copies is None:
        with tracking(tracking_uri):
            loaded = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
        return champion, loaded.unwrap_python_model().model
    try:
        folder = _copy(champion, tracking_uri, copies, run_artifacts)
        model = _load_copy(folder)
    except Exception as error:
        why = f"version {champion.version} cannot be loaded ({_short(error)})"
        log.error("%s: %s", name, why)
        shutil.rmtree(copies / name / champion.version, ignore_errors=True)
        return _last_good(name, copies, why)
    write_json_atomic(copies / name / CURRENT_COPY, {"version": champion.version})
    for other in (copies / name).iterdir():
        # The copy now loaded is the last good one; older versions are not needed.
        if other.is_dir() and other.name != champion.version and not other.name.startswith("."):
            shutil.rmtree(other, ignore_errors=True)
    return Champion(name, champion.version, champion.aliases, champion.run_id, folder), model
