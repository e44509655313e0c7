"""One function logs and registers a training run, from one record, for every kind of model.

    RunRecord → MLflow run (params, metrics, tags, artifacts, the model with its signature
    and input example) → registry version → `challenger`, `champion` when the promotion
    rule says it beats the current champion on the same test rows → version tags

A trainer fills in what is its own (its parameters, metrics, files and how a champion is
scored); the parameters, tags and version tags every run carries are added here, so every
model's runs read alike in MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from aftersale.settings import Settings
from models.served.classifier import PYFUNC_CODE
from models.served.registry import tracking
from models.spec import ModelSpec
from training.data import write_json
from training.register import log_run, promote, record_promotion, tag_version
from training.trainer import TrainResult

INPUT_EXAMPLE_ROWS = 5
SIGNATURE_ROWS = 2000


def first_rows(frames: pd.DataFrame | Sequence[pd.DataFrame], rows: int) -> pd.DataFrame:
    """The first `rows` rows of one frame, or of several frames one after the other."""
    if isinstance(frames, pd.DataFrame):
        return frames.head(rows)
    taken = []
    for frame in frames:
        taken.append(frame.head(max(rows, 0)))
        rows -= len(taken[-1])
        if rows <= 0:
            break
    return pd.concat(taken)


@dataclass(frozen=True)
class PromotionRule:
    """How the champion gate compares a new version with the current champion.

    Attributes:
        rows: The test rows both are scored on (the champion through its registered model).
        y: Their labels, for a binary metric (None with `champion_metric`).
        capacity: Capacity of @k metrics.
        champion_metric: The champion's scores of `rows` → its primary metric (None: the
            binary metric against `y`).
        challenger_scores: The new version's scores of `rows`, so that both can be judged
            on the rows a champion has not seen (`training.register.promote`).
        margin: How far below the champion the new version may fall and still be promoted.
        champion_scores: A champion version's scores of `rows`, made by the trainer (version →
            scores), used instead of scoring `rows` again.
    """

    rows: pd.DataFrame
    y: np.ndarray | None = None
    capacity: float = 0.0
    champion_metric: Callable[[np.ndarray], float] | None = None
    challenger_scores: np.ndarray | None = None
    margin: float = 0.0
    champion_scores: Mapping[str, np.ndarray] | None = None


@dataclass
class RunRecord:
    """What one training run logs.

    Attributes:
        spec: The model.
        result: The run's result (metrics, data version, split, features, model).
        params: The trainer's own parameters (e.g. LightGBM's, prefixed `lgbm_`).
        metrics: Every metric to log (NaN and infinite values are left out).
        files: Artifact folder → files (the features and split files are added).
        words: Feature → description, for the features file.
        digests: `training.register.data_version` of the inputs.
        input_example: A few input rows, logged with the model.
        signature_rows: Input rows the signature is inferred from, in one frame or several
            (the first `SIGNATURE_ROWS` of them, in order, are used: several frames are never
            copied into one whole).
        promotion: The champion gate's rule.
        version_tags: Tags of the registered version besides the common ones.
        python_model: The code file of the pyfunc wrapper (MLflow's models from code).
    """

    spec: ModelSpec
    result: TrainResult
    params: Mapping[str, object]
    metrics: Mapping[str, float]
    files: Mapping[str, Sequence[Path]]
    words: Mapping[str, str]
    digests: Mapping[str, str]
    input_example: pd.DataFrame
    signature_rows: pd.DataFrame | tuple[pd.DataFrame, ...]
    promotion: PromotionRule
    version_tags: Mapping[str, str] = field(default_factory=dict)
    python_model: Path = PYFUNC_CODE


def log_and_register(
    record: RunRecord, settings: Settings, scratch: Path, tracking_uri: str | None = None
) -> TrainResult:
    """Log the run, register its model, run the champion gate and tag the version.

    Args:
        record: The run.
        settings: The tracking store's default and the local artifact folder.
        scratch: A folder for the files written here (the caller's temporary folder).
        tracking_uri: MLflow URI (default: `settings.tracking_uri`).

    Returns:
        The record's result with its run id, version and promotion set.
    """
    spec, result = record.spec, record.result
    uri = tracking_uri or settings.tracking_uri
    # A local artifact folder goes with the local SQLite store only; a server has its own.
    artifact_root = settings.artifact_root if uri.startswith("sqlite:") else None
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    described = [{"name": f, "description": record.words.get(f, "")} for f in result.features]
    files = {folder: list(paths) for folder, paths in record.files.items()}
    files.setdefault("data", [])[:0] = [
        write_json(scratch / "features.json", described),
        write_json(scratch / "split.json", result.split),
    ]
    params = {
        **record.params,
        "kind": str(spec.kind),
        "feature_service": spec.feature_service,
        "features": ",".join(result.features),
        "n_features": len(result.features),
        "categorical": ",".join(spec.categorical),
        "primary_metric": spec.primary_metric,
        "max_events": spec.max_events,
        "split_fractions": spec.split.fractions,
        "split_purge": spec.split.purge,
        **result.split,
        "data_version": result.data_version,
    }
    tags = {
        "model": spec.name,
        "kind": str(spec.kind),
        "entity": ",".join(spec.entity),
        "decision_time": spec.decision_time,
        "data_version": result.data_version,
        **{f"digest.{k}": v for k, v in record.digests.items() if k != "data_version"},
    }
    value = result.metrics[spec.primary_metric]
    rule = record.promotion
    with tracking(uri):
        run_id, info = log_run(
            experiment=spec.name,
            artifact_root=artifact_root,
            run_name=f"{spec.name}-{result.data_version[:8]}",
            params=params,
            metrics=record.metrics,
            tags=tags,
            artifacts=files,
            model=result.model,
            input_example=record.input_example.head(INPUT_EXAMPLE_ROWS),
            signature_rows=first_rows(record.signature_rows, SIGNATURE_ROWS),
            registered_name=spec.name,
            python_model=record.python_model,
        )
        version = str(info.registered_model_version)
        promotion = promote(
            spec.name,
            version,
            spec.primary_metric,
            value,
            rule.rows,
            rule.y,
            rule.capacity,
            champion_metric=rule.champion_metric,
            higher_is_better=spec.higher_is_better,
            challenger_scores=rule.challenger_scores,
            margin=rule.margin,
            champion_scores=rule.champion_scores,
        )
        tag_version(
            spec.name,
            version,
            {
                "data_version": result.data_version,
                f"test_{spec.primary_metric}": f"{value:.6f}",
                **record.version_tags,
                "promotion": promotion.reason,
            },
        )
        record_promotion(run_id, promotion)
    result.run_id, result.version, result.promotion = run_id, version, promotion
    return result
