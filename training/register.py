"""MLflow: log a training run, register the model, and promote it only when it is better.

Every run records its parameters, metrics, data version (a hash of the input tables),
feature list, plots and the model with its signature and input example. The registry keeps
one name per model: each new version gets the alias `challenger` and takes `champion` only
when its primary test metric beats the current champion's, measured on the same test rows
(the champion is loaded and scored here, not compared by numbers from another window).

Calls run inside `models.served.registry.tracking(uri)`, which points MLflow at a store for
the block only: nothing here touches MLflow's global state on import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa

from models.served.classifier import PYFUNC_CODE, CalibratedModel, PyfuncModel
from models.served.registry import CHALLENGER, CHAMPION, MODEL_ARTIFACT, tracking
from models.spec import EVENT_TIME
from training.evaluate import binary_metrics

log = logging.getLogger(__name__)

HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "precision_at_k": True,
    "recall_at_k": True,
    "lift_top_decile": True,
    "brier": False,
    "ece": False,
    # Delivery estimate: mean absolute error in days of the most likely date.
    "mae_days": False,
}
# What the logged model needs at load time besides this project's own code.
_REQUIREMENTS = ("lightgbm", "scikit-learn", "pandas", "numpy", "mlflow")


class _HashSink:
    """A write-only file object that feeds a hash."""

    def __init__(self, digest) -> None:
        self.digest = digest
        self.closed = False

    def write(self, data) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def table_digest(table: pa.Table) -> str:
    """SHA-256 of a table's content, independent of its chunking and metadata.

    Each column is combined into one array and written in Arrow IPC form (which truncates
    sliced buffers and zeroes padding), one column at a time to bound memory.
    """
    digest = hashlib.sha256()
    for name in sorted(table.column_names):
        column = table.column(name).combine_chunks()
        digest.update(f"{name}:{column.type}:{len(column)}".encode())
        batch = pa.record_batch([column], names=[name])
        sink = pa.PythonFile(_HashSink(digest), mode="w")
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
    return digest.hexdigest()


def file_digest(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def data_version(tables: Mapping[str, pa.Table], files: Mapping[str, Path]) -> dict[str, str]:
    """Digests of every input, and one combined version over all of them.

    Args:
        tables: Raw tables read by the label function, by name.
        files: Offline feature files behind the feature service, by view name.

    Returns:
        "data_version" (16 hex digits) and one "<kind>/<name>" digest per input.
    """
    parts = {f"raw/{name}": table_digest(t) for name, t in sorted(tables.items())}
    parts |= {f"features/{name}": file_digest(p) for name, p in sorted(files.items())}
    combined = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return {"data_version": combined, **parts}


def read_version(
    names: Sequence[str], tables: Mapping[str, pa.Table], files: Mapping[str, Path]
) -> dict[str, str]:
    """`data_version` of the tables among `names` (a model's `spec.tables`) that were read."""
    return data_version({n: tables[n] for n in names if n in tables}, files)


def pip_requirements() -> list[str]:
    """Pinned versions of the libraries the logged model loads with."""
    return [f"{name}=={metadata.version(name)}" for name in _REQUIREMENTS]


def prepare_tracking_store(uri: str) -> None:
    """Have the tracking store at `uri` make its tables now (a fresh SQLite or PostgreSQL
    store makes them for its first client), so that processes starting together find them
    made rather than each making them at once."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)


def ensure_experiment(client, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, created (with its artifact folder) when missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = (artifact_root / name).as_uri() if artifact_root is not None else None
    return client.create_experiment(name, artifact_location=location)


@dataclass(frozen=True)
class Promotion:
    """The outcome of the champion gate."""

    version: str
    promoted: bool
    metric: str
    challenger_value: float
    champion_version: str | None
    champion_value: float | None
    reason: str


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def log_run(
    *,
    experiment: str,
    artifact_root: Path | None,
    run_name: str,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artifacts: Mapping[str, Sequence[Path]],
    model: CalibratedModel,
    input_example: pd.DataFrame,
    signature_rows: pd.DataFrame,
    registered_name: str | None,
    python_model: Path = PYFUNC_CODE,
):
    """Log one run and (optionally) register its model; call inside `tracking(uri)`.

    Args:
        experiment: Experiment name (created if missing).
        artifact_root: Artifact folder for a new experiment (None: the server's default).
        run_name: Name of the run.
        params: Run parameters (stringified by MLflow).
        metrics: Run metrics; NaN and infinite values are left out.
        tags: Run tags.
        artifacts: Files to log, artifact sub-folder → local paths.
        model: The trained model.
        input_example: A few input rows, logged with the model.
        signature_rows: Input rows to infer the signature from (more rows: truer optional
            columns).
        registered_name: Register the model under this name; None to skip.
        python_model: The code file that builds the pyfunc wrapper loading `model` from its
            saved folder (MLflow's models from code; default: `PyfuncModel`'s, for a
            `CalibratedModel`). A model with a `signature_output(rows)` method declares its
            output by it instead of `predict_proba`.

    Returns:
        (run id, ModelInfo of the logged model).
    """
    from mlflow.models import infer_signature

    client = mlflow.MlflowClient()
    experiment_id = ensure_experiment(client, experiment, artifact_root)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_metrics(_finite(metrics))
        mlflow.set_tags(dict(tags))
        for folder, paths in artifacts.items():
            for path in paths:
                mlflow.log_artifact(str(path), artifact_path=folder)
        output = getattr(model, "signature_output", None) or model.predict_proba
        signature = infer_signature(model.input_frame(signature_rows), output(signature_rows))
        with tempfile.TemporaryDirectory() as scratch:
            model_dir = model.save(Path(scratch) / "calibrated_model")
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(python_model),
                artifacts={"model_dir": str(model_dir)},
                signature=signature,
                input_example=model.input_frame(input_example),
                pip_requirements=pip_requirements(),
            )
    if registered_name is not None:
        info.registered_model_version = register_version(client, registered_name, info)
    return run.info.run_id, info


def register_version(client, name: str, info) -> int:
    """A new registry version of `name` (the registered model created when missing) for a
    logged model. Through the client: the fluent `log_model(registered_model_name=...)`
    prints its progress to the console, past any logging set-up."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        exists = (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS))
        if error.error_code not in exists:
            raise
    version = client.create_model_version(
        name, info.model_uri, run_id=info.run_id, model_id=info.model_id
    )
    return int(version.version)


def champion_version(client, name: str) -> str | None:
    """The version the `champion` alias points to, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def score_version(name: str, version: str, rows: pd.DataFrame) -> np.ndarray:
    """Scores of a registered version on rows; call inside `tracking(uri)`.

    Only the columns in the version's signature are passed, so a champion trained on other
    features still scores the same rows when they hold its columns.
    """
    return version_scorer(name, version)(rows)


def champion_scorer(
    name: str, tracking_uri: str
) -> dict[str, Callable[[pd.DataFrame], np.ndarray]]:
    """The current champion of `name` as {version: rows → its scores} (`version_scorer`);
    empty when there is none or it cannot be loaded (the gate then says why)."""
    from training.model_cards import store_exists

    if not store_exists(tracking_uri):
        return {}
    with tracking(tracking_uri):
        current = champion_version(mlflow.MlflowClient(), name)
        if current is None:
            return {}
        try:
            return {current: version_scorer(name, current)}
        except Exception as error:  # the gate scores it again and reports the failure
            log.warning("champion v%s of %s could not be loaded: %s", current, name, error)
            return {}


def version_scorer(name: str, version: str) -> Callable[[pd.DataFrame], np.ndarray]:
    """A registered version loaded once, as rows → its scores (`score_version`); call inside
    `tracking(uri)`. Its calls need no tracking store."""

    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    schema = loaded.metadata.get_input_schema()
    try:
        wrapped = loaded.unwrap_python_model()
    except mlflow.exceptions.MlflowException:
        wrapped = None

    def scores(rows: pd.DataFrame) -> np.ndarray:
        columns = schema.input_names() if schema is not None else list(rows.columns)
        missing = [c for c in columns if c not in rows.columns]
        if missing:
            raise KeyError(
                f"version {version} of {name} needs columns the test rows lack: {missing}"
            )
        if isinstance(wrapped, PyfuncModel):
            # The same model object, without MLflow's per-call schema enforcement.
            return np.asarray(wrapped.model.predict_proba(rows[columns]), dtype=np.float64)
        return np.asarray(loaded.predict(rows[columns]), dtype=np.float64).ravel()

    return scores


def promote(
    name: str,
    version: str,
    metric: str,
    challenger_value: float,
    rows: pd.DataFrame,
    y: np.ndarray | None,
    capacity: float,
    *,
    champion_metric: Callable[[np.ndarray], float] | None = None,
    higher_is_better: bool | None = None,
    challenger_scores: np.ndarray | None = None,
    margin: float = 0.0,
    champion_scores: Mapping[str, np.ndarray] | None = None,
) -> Promotion:
    """Give the new version `challenger`, and `champion` when it beats the current one.

    The current champion is scored on the same test rows as the challenger. A champion that
    saw some of them (fitted through newer labels, `served_seen_end` on its run) is judged
    only on the rows after the last it saw, and so is the challenger, from its
    `challenger_scores` of `rows` (binary metrics): on rows it learned from, a champion
    would win by memory. Without such scores, or with no row new to the champion, the
    champion stays. With a `margin`, the new version is promoted unless it falls more than
    that below the champion (a retrain the monitor called for). `champion_scores` (version →
    its scores of `rows`) spares scoring a champion whose scores the trainer already made,
    where `rows` lack the features (the offer model's candidates). Call inside
    `tracking(uri)`.

    Args:
        name: Registered model name.
        version: The new version.
        metric: Primary metric (a key of `HIGHER_IS_BETTER`, or any name when
            `champion_metric` and `higher_is_better` are given).
        challenger_value: The new version's test metric.
        rows: The test rows (retrieved and derived features).
        y: Their labels (binary metrics; unused with `champion_metric`).
        capacity: Capacity for @k metrics.
        champion_metric: The champion's scores of `rows` → its metric; by default the
            binary metric `metric` against `y`.
        higher_is_better: Direction of `metric`; by default from `HIGHER_IS_BETTER`.

    Returns:
        What happened and why.
    """

    if higher_is_better is None:
        if metric not in HIGHER_IS_BETTER:
            raise ValueError(f"no promotion rule for metric {metric!r}: {sorted(HIGHER_IS_BETTER)}")
        higher_is_better = HIGHER_IS_BETTER[metric]
    if champion_metric is None:
        if y is None:
            raise ValueError("promote needs the labels y or a champion_metric")

        def champion_metric(scores: np.ndarray) -> float:
            return binary_metrics(y, scores, capacity)[metric]

    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, CHALLENGER, version)
    current = champion_version(client, name)
    if current is None:
        client.set_registered_model_alias(name, CHAMPION, version)
        return Promotion(version, True, metric, challenger_value, None, None, "no champion yet")

    def stays(reason: str) -> Promotion:
        """The champion stays, unscored."""
        return Promotion(version, False, metric, challenger_value, current, None, reason)

    seen_end = _seen_end(client, name, current)
    if seen_end is not None:
        new = (pd.to_datetime(rows[EVENT_TIME], utc=True) > seen_end).to_numpy()
        if not new.all():
            kept = "" if challenger_scores is None else f" ({int(new.sum())} of {len(new)})"
            if challenger_scores is None or y is None or len(np.unique(y[new])) < 2:
                return stays(
                    f"champion v{current} saw test rows up to {seen_end:%Y-%m-%d}; too few "
                    f"rows are new to it{kept} to compare on"
                )
            log.info(
                "%s: judged on the %d of %d test rows new to v%s",
                name,
                new.sum(),
                len(new),
                current,
            )
            rows, y = rows[new], y[new]
            challenger_value = binary_metrics(y, challenger_scores[new], capacity)[metric]
    try:
        if champion_scores is not None and current in champion_scores:
            scores = champion_scores[current]
        else:
            scores = score_version(name, current, rows)
    except Exception as error:  # any failure to score keeps the champion
        log.warning("champion v%s of %s could not be scored: %s", current, name, error)
        return stays(f"champion could not be scored on the test rows: {error}")
    champion_value = float(champion_metric(scores))
    sign = 1.0 if higher_is_better else -1.0
    ahead = sign * (challenger_value - champion_value)
    better = math.isfinite(challenger_value) and (
        not math.isfinite(champion_value) or ahead > 0 or (margin > 0 and ahead >= -margin)
    )
    if better:
        client.set_registered_model_alias(name, CHAMPION, version)
    verdict = "beats" if better else "does not beat"
    if margin > 0 and not ahead > 0:
        # A marked model's retrain: promoted unless it falls more than the margin behind.
        verdict = f"is within {margin:g} of" if better else f"falls more than {margin:g} below"
    reason = (
        f"test {metric} {challenger_value:.5f} {verdict} champion v{current} {champion_value:.5f}"
    )
    log.info("%s v%s: %s", name, version, reason)
    return Promotion(
        version, better, metric, challenger_value, current, float(champion_value), reason
    )


def _seen_end(client, name: str, version: str) -> pd.Timestamp | None:
    """The last decision a version saw, from its run's `served_seen_end` (None: not
    logged, as by runs that served the model of their time split)."""
    run_id = client.get_model_version(name, version).run_id
    if not run_id:
        return None
    seen = client.get_run(run_id).data.params.get("served_seen_end")
    return None if seen is None else pd.Timestamp(seen)


def tag_version(name: str, version: str, tags: Mapping[str, str]) -> None:
    """Set tags on a model version; call inside `tracking(uri)`."""

    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def record_promotion(run_id: str, promotion: Promotion) -> None:
    """Note the gate's outcome on the run (and the champion's metric on the same rows)."""
    client = mlflow.MlflowClient()
    client.set_tag(run_id, "promotion", promotion.reason)
    client.set_tag(run_id, "promoted", str(promotion.promoted).lower())
    if promotion.champion_value is not None:
        client.log_metric(run_id, f"test_champion_{promotion.metric}", promotion.champion_value)


def champion_versions(tracking_uri: str, names: Iterable[str]) -> dict[str, str | None]:
    """Each named model's champion version (None: none), to `restore_champions` later."""
    from training.model_cards import store_exists

    names = list(names)
    if not store_exists(tracking_uri):
        # A fresh data folder: asking would create the store.
        return dict.fromkeys(names)
    with tracking(tracking_uri):
        client = mlflow.MlflowClient()
        return {name: champion_version(client, name) for name in names}


def restore_champions(tracking_uri: str, versions: Mapping[str, str | None]) -> list[str]:
    """Point each model's `champion` alias back at its version in `versions` (removing it
    where that is None); returns the models whose champion changed back."""
    changed = []
    with tracking(tracking_uri):
        client = mlflow.MlflowClient()
        for name, version in versions.items():
            if champion_version(client, name) == version:
                continue
            if version is None:
                client.delete_registered_model_alias(name, CHAMPION)
            else:
                client.set_registered_model_alias(name, CHAMPION, version)
            changed.append(name)
    return changed
