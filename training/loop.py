"""The generic training loop: one call trains, evaluates, explains, logs and registers a model.

    label events (raw tables) → point-in-time features (Feast) → decision-time features →
    time split → LightGBM → calibration → test metrics beside the baseline, per segment →
    SHAP explanations → MLflow run → registry version, `challenger`, maybe `champion`

What varies between models is declared in a `training.spec.ModelSpec` (see `models/`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureService, FeatureStore

from aftersale.settings import Settings
from features.build.derived import add_time_features
from features.contract.io import read_validated
from features.ingest import latest_raw
from features.store.retrieval import feature_names, historical_features
from training.calibrate import choose_calibrator
from training.evaluate import binary_metrics, flatten_segments, reliability_plot, segment_metrics
from training.explain import TIME_FEATURE_WORDS, write_explanations
from training.fit import fit_lightgbm, layout_from_train
from training.model import CalibratedModel
from training.register import (
    Promotion,
    data_version,
    default_artifact_root,
    default_tracking_uri,
    log_run,
    promote,
    record_promotion,
    tag_version,
    tracking,
)
from training.spec import EVENT_TIME, LABEL, LABEL_KNOWN, ModelSpec
from training.split import SplitError, TimeSplit, time_split

log = logging.getLogger(__name__)

SEGMENT_METRICS = ("rows", "positive_rate", "roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")
INPUT_EXAMPLE_ROWS = 5
SIGNATURE_ROWS = 2000


@dataclass
class TrainingData:
    """Labelled decisions with their features, ready to split."""

    frame: pd.DataFrame
    features: list[str]
    service: FeatureService
    words: dict[str, str]
    feature_files: dict[str, Path]
    retrieval_s: float


@dataclass
class TrainResult:
    """Everything a caller (CLI, flow, benchmark) reports about one training run.

    Attributes:
        name: Model name.
        primary_metric: Key of `metrics` (and `baseline_metrics`) that decides promotion.
        run_id: MLflow run id (None when not logged).
        version: Registered version (None when not registered).
        promotion: The champion gate's outcome (None when not registered).
        metrics: Test metrics of the calibrated model.
        baseline_metrics: Test metrics of the baseline on the same rows.
        validation_metrics: Validation metrics of the calibrated model (in-sample for the
            calibrator: for reference only).
        calibration: Chosen method and the cross-validated loss of each candidate.
        data_version: Digest of the inputs.
        features: Model input columns.
        split: Window spans and row counts.
        scores: Test rows: join keys, event time, label, model score, baseline score and
            segment columns (benchmarks join the oracle onto these).
        model: The trained model.
        seconds: Wall time per stage.
    """

    name: str
    run_id: str | None
    version: str | None
    promotion: Promotion | None
    primary_metric: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    calibration: dict[str, object]
    data_version: str
    features: list[str]
    split: dict[str, str | int]
    scores: pd.DataFrame
    model: CalibratedModel
    seconds: dict[str, float] = field(default_factory=dict)


def load_raw_tables(
    settings: Settings, names: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, pa.Table]:
    """The named contract tables of the current published raw version.

    Args:
        settings: Where the published raw versions live.
        names: Tables that must be present.
        optional: Tables read when present.

    Raises:
        FileNotFoundError: Nothing was ingested, or a needed table is absent.
    """
    folder = latest_raw(settings.raw_root)
    tables = read_validated(folder, tables=[*names, *optional])
    missing = sorted(set(names) - set(tables))
    if missing:
        raise FileNotFoundError(f"tables {missing} not found in {folder}")
    return tables


def feature_words(store: FeatureStore, service: FeatureService) -> dict[str, str]:
    """Feature descriptions from the Feast views behind a service."""
    words = dict(TIME_FEATURE_WORDS)
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        for feature in view.features:
            if feature.description:
                # Reason codes read "<description>: <value>", so no closing full stop.
                words[feature.name] = feature.description.rstrip(". ")
    return words


def feature_files(store: FeatureStore, service: FeatureService) -> dict[str, Path]:
    """Local offline files behind a service's views (for the data version)."""
    files = {}
    root = Path(store.config.repo_path or ".")
    for projection in service.feature_view_projections:
        source = store.get_feature_view(projection.name).batch_source
        path = getattr(source, "path", None)
        if not path or "://" in str(path):
            continue
        resolved = Path(path) if Path(path).is_absolute() else root / path
        if resolved.is_file():
            files[projection.name] = resolved
    return files


def training_data(
    spec: ModelSpec,
    store: FeatureStore,
    tables: Mapping[str, pa.Table] | None,
    events: pd.DataFrame | None = None,
) -> TrainingData:
    """Label events joined with their point-in-time features and decision-time features.

    Args:
        spec: The model.
        store: The Feast store (definitions applied, offline tables published).
        tables: Raw tables holding at least `spec.raw_tables`.
        events: Decisions to use instead of `spec.label_events(tables)` (e.g. candidate
            actions to score); the same columns are required.

    Returns:
        One row per label event (RangeIndex), the model's input columns, and metadata.

    Raises:
        ValueError: The label events lack a required column, or a declared feature is not
            produced by the service or the derived features.
    """
    if events is None:
        if tables is None:
            raise ValueError(f"{spec.name}: training data needs raw tables or events")
        events = spec.label_events(dict(tables))
    needed = [*spec.entity, EVENT_TIME, LABEL, LABEL_KNOWN]
    lacking = [c for c in needed if c not in events.columns]
    if lacking:
        raise ValueError(f"{spec.name}: label events lack columns {lacking}")
    events = sample_entities(events, list(spec.entity), spec.max_events)
    events = events.sort_values([EVENT_TIME, *spec.entity], kind="stable").reset_index(drop=True)
    service = store.get_feature_service(spec.feature_service)
    started = time.perf_counter()
    frame = historical_features(store, events, service)
    retrieval_s = time.perf_counter() - started
    frame = add_time_features(frame, frame[EVENT_TIME])
    retrieved = feature_names(store, service)
    features = [f for f in [*retrieved, *spec.derived] if f not in spec.exclude]
    unknown = [f for f in [*features, *spec.categorical] if f not in frame.columns]
    if unknown:
        raise ValueError(f"{spec.name}: features {unknown} are neither retrieved nor derived")
    log.info(
        "%s: %d label events, %d features, retrieved in %.1f s",
        spec.name,
        len(frame),
        len(features),
        retrieval_s,
    )
    return TrainingData(
        frame=frame,
        features=features,
        service=service,
        words={**feature_words(store, service), **spec.words},
        feature_files=feature_files(store, service),
        retrieval_s=retrieval_s,
    )


def sample_entities(events: pd.DataFrame, keys: list[str], limit: int | None) -> pd.DataFrame:
    """At most about `limit` label events, keeping every decision of a sample of entities.

    Whole entities are kept or left (by a hash of their keys, so the sample is the same in
    every run and window): a shipment's or customer's decisions stay together, and the time
    split still sees each kept entity's whole history. Memory then stays bounded at scale.
    """
    if limit is None or len(events) <= limit:
        return events
    share = limit / len(events)
    hashed = pd.util.hash_pandas_object(events[keys], index=False).to_numpy()
    keep = (hashed % 1_000_003) < share * 1_000_003
    log.info(
        "sampled %.1f%% of entities: %d of %d label events", 100 * share, keep.sum(), len(events)
    )
    return events[keep]


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def train(
    spec: ModelSpec,
    store: FeatureStore,
    settings: Settings,
    *,
    tables: Mapping[str, pa.Table] | None = None,
    tracking_uri: str | None = None,
    register: bool = True,
    explain_rows: int = 2000,
) -> TrainResult:
    """Train, evaluate, explain, log and register one model.

    Args:
        spec: The model (see `models.REGISTRY`).
        store: The Feast store to read point-in-time features from.
        settings: Data folder and the rest of the configuration.
        tables: Raw tables; by default the current published raw version's
            `spec.raw_tables`.
        tracking_uri: MLflow tracking and registry URI; by default the settings'
            `mlflow_tracking_uri` when it exists and is set, else SQLite under the data
            folder (`<data_dir>/mlflow/mlflow.db`, artifacts in `<data_dir>/mlflow/artifacts`).
        register: Log to MLflow and register (False: train and evaluate only).
        explain_rows: Test rows explained with SHAP.

    Returns:
        Metrics, scores, the model and where it was logged.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if tables is None:
        tables = load_raw_tables(settings, spec.raw_tables, spec.optional_tables)
    data = training_data(spec, store, tables)
    frame, features = data.frame, data.features
    seconds["features"] = time.perf_counter() - started
    seconds["retrieval"] = data.retrieval_s

    split = time_split(frame, spec.split, EVENT_TIME, LABEL_KNOWN)
    train_rows, valid_rows, test_rows = (frame.loc[w.index] for w in split.windows())
    for window, rows in zip(split.windows(), (train_rows, valid_rows, test_rows), strict=True):
        # One class cannot be learned, calibrated or ranked (e.g. churn where no customer
        # ever orders twice): say so rather than report NaN.
        if rows[LABEL].nunique() < 2:
            raise SplitError(
                f"{spec.name}: every label in the {window.name} window is "
                f"{rows[LABEL].iloc[0]} ({window.rows} rows); these data cannot train it"
            )

    clock = time.perf_counter()
    layout = layout_from_train(train_rows, features, list(spec.categorical))
    params = dict(spec.params)
    if spec.params_rule is not None:
        params |= spec.params_rule(train_rows[LABEL])
    fitted = fit_lightgbm(
        train_rows,
        valid_rows,
        layout,
        LABEL,
        params,
        spec.num_boost_round,
        spec.early_stopping_rounds,
    )
    seconds["fit"] = time.perf_counter() - clock

    clock = time.perf_counter()
    raw_valid = fitted.raw_score(valid_rows)
    choice = choose_calibrator(
        raw_valid,
        valid_rows[LABEL].to_numpy(),
        criterion=spec.calibration_criterion,
        min_isotonic_rows=spec.min_isotonic_rows,
    )
    model = CalibratedModel(
        spec.name, fitted.booster, fitted.best_iteration, layout, choice.calibrator, data.words
    )
    seconds["calibrate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    y_test = test_rows[LABEL].to_numpy()
    # One pass of the trees per window: the model's score is the calibrated raw score.
    raw_test = fitted.raw_score(test_rows)
    score = choice.calibrator(raw_test)
    baseline = np.asarray(spec.baseline(test_rows), dtype=np.float64)
    metrics = binary_metrics(y_test, score, spec.capacity)
    raw_metrics = binary_metrics(y_test, raw_test, spec.capacity)
    baseline_metrics = binary_metrics(
        y_test, baseline, spec.capacity, probabilities=spec.baseline_is_probability
    )
    validation_metrics = binary_metrics(
        valid_rows[LABEL].to_numpy(), choice.calibrator(raw_valid), spec.capacity
    )
    scores = test_rows[[*spec.entity, EVENT_TIME, LABEL]].copy()
    scores["score"] = score
    scores["baseline"] = baseline
    for column in spec.segments:
        if column not in scores:
            scores[column] = test_rows[column]
    segments = segment_metrics(
        scores,
        list(spec.segments),
        {"model": "score", "baseline": "baseline"},
        capacity=spec.capacity,
        probabilities={"baseline": spec.baseline_is_probability},
    )
    seconds["evaluate"] = time.perf_counter() - clock
    log.info(
        "%s test: %s %.4f (baseline %.4f), brier %.4f, ece %.4f on %d rows",
        spec.name,
        spec.primary_metric,
        metrics[spec.primary_metric],
        baseline_metrics[spec.primary_metric],
        metrics["brier"],
        metrics["ece"],
        len(test_rows),
    )

    read = [n for n in (*spec.raw_tables, *spec.optional_tables) if n in tables]
    versions = data_version({n: tables[n] for n in read}, data.feature_files)
    calibration = {"method": choice.calibrator.method, "losses": choice.losses}
    result = TrainResult(
        name=spec.name,
        run_id=None,
        version=None,
        promotion=None,
        primary_metric=spec.primary_metric,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        validation_metrics=validation_metrics,
        calibration=calibration,
        data_version=versions["data_version"],
        features=features,
        split=split.summary(),
        scores=scores.reset_index(drop=True),
        model=model,
        seconds=seconds,
    )
    if not register:
        seconds["total"] = time.perf_counter() - started
        return result

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        clock = time.perf_counter()
        explained = write_explanations(
            fitted.booster,
            layout,
            test_rows,
            data.words,
            out / "explain",
            num_iteration=fitted.best_iteration,
            rows=explain_rows,
        )
        seconds["explain"] = time.perf_counter() - clock
        clock = time.perf_counter()
        files = _run_artifacts(spec, data, split, segments, scores, frame, test_rows, out)
        files["explain"] = list(explained.values())
        reliability = out / "reliability.png"
        reliability_plot(y_test, score, raw_test, title=f"{spec.name}, test window").savefig(
            reliability, dpi=110
        )
        files["evaluation"].append(reliability)
        result = _log_and_register(
            spec,
            settings,
            tracking_uri,
            result,
            fitted.params,
            files,
            raw_metrics,
            segments,
            versions,
            test_rows,
            valid_rows,
            split,
        )
        seconds["log"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started
    log.info("%s: trained in %.1f s (%s)", spec.name, seconds["total"], seconds)
    return result


def _run_artifacts(
    spec: ModelSpec,
    data: TrainingData,
    split: TimeSplit,
    segments: pd.DataFrame,
    scores: pd.DataFrame,
    frame: pd.DataFrame,
    test_rows: pd.DataFrame,
    out: Path,
) -> dict[str, list[Path]]:
    """Write the tables a run keeps: features, split, segment metrics, model reports."""
    out.mkdir(parents=True, exist_ok=True)
    described = [{"name": f, "description": data.words.get(f, "")} for f in data.features]
    paths: dict[str, list[Path]] = {
        "data": [
            _write_json(out / "features.json", described),
            _write_json(out / "split.json", split.summary()),
        ],
        "evaluation": [out / "segment_metrics.csv"],
    }
    segments.to_csv(out / "segment_metrics.csv", index=False)
    if spec.reports is not None:
        scored = test_rows.assign(score=scores["score"].to_numpy())
        for name, table in spec.reports(frame, scored).items():
            path = out / f"{name}.csv"
            table.to_csv(path, index=False)
            paths["evaluation"].append(path)
    return paths


def _log_and_register(
    spec: ModelSpec,
    settings: Settings,
    tracking_uri: str | None,
    result: TrainResult,
    params: dict[str, object],
    files: dict[str, list[Path]],
    raw_metrics: dict[str, float],
    segments: pd.DataFrame,
    versions: dict[str, str],
    test_rows: pd.DataFrame,
    valid_rows: pd.DataFrame,
    split: TimeSplit,
) -> TrainResult:
    """Log the run to MLflow, register the model and run the champion gate."""
    configured = getattr(settings, "mlflow_tracking_uri", None)
    uri = tracking_uri or configured or default_tracking_uri(settings)
    # A local artifact folder goes with the local SQLite store only; a server has its own.
    artifact_root = default_artifact_root(settings) if uri.startswith("sqlite:") else None
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
    metrics = {f"test_{k}": v for k, v in result.metrics.items()}
    metrics |= {f"test_baseline_{k}": v for k, v in result.baseline_metrics.items()}
    metrics |= {f"test_uncalibrated_{k}": v for k, v in raw_metrics.items()}
    metrics |= {f"validation_{k}": v for k, v in result.validation_metrics.items()}
    metrics |= {f"calibration_{k}": v for k, v in result.calibration["losses"].items()}
    metrics |= flatten_segments(segments, "test_segment", SEGMENT_METRICS)
    metrics["best_iteration"] = float(result.model.best_iteration)
    params_logged = {
        **{f"lgbm_{k}": v for k, v in params.items()},
        "num_boost_round": spec.num_boost_round,
        "early_stopping_rounds": spec.early_stopping_rounds,
        "feature_service": spec.feature_service,
        "features": ",".join(result.features),
        "n_features": len(result.features),
        "categorical": ",".join(spec.categorical),
        "calibration": result.calibration["method"],
        "calibration_criterion": spec.calibration_criterion,
        "capacity": spec.capacity,
        "primary_metric": spec.primary_metric,
        "max_events": spec.max_events,
        "split_fractions": spec.split.fractions,
        "split_purge": spec.split.purge,
        **result.split,
        "data_version": result.data_version,
    }
    tags = {
        "model": spec.name,
        "entity": ",".join(spec.entity),
        "decision_time": spec.decision_time,
        "data_version": result.data_version,
        **{f"digest.{k}": v for k, v in versions.items() if k != "data_version"},
    }
    with tracking(uri):
        run_id, info = log_run(
            experiment=spec.name,
            artifact_root=artifact_root,
            run_name=f"{spec.name}-{result.data_version[:8]}",
            params=params_logged,
            metrics=metrics,
            tags=tags,
            artifacts=files,
            model=result.model,
            input_example=test_rows.head(INPUT_EXAMPLE_ROWS),
            signature_rows=pd.concat([valid_rows, test_rows]).head(SIGNATURE_ROWS),
            registered_name=spec.name,
        )
        version = str(info.registered_model_version)
        promotion = promote(
            spec.name,
            version,
            spec.primary_metric,
            result.metrics[spec.primary_metric],
            test_rows,
            test_rows[LABEL].to_numpy(),
            spec.capacity,
        )
        tag_version(
            spec.name,
            version,
            {
                "data_version": result.data_version,
                f"test_{spec.primary_metric}": f"{result.metrics[spec.primary_metric]:.6f}",
                "test_window": f"{split.test.start.isoformat()}/{split.test.end.isoformat()}",
                "promotion": promotion.reason,
            },
        )
        record_promotion(run_id, promotion)
    result.run_id = run_id
    result.version = version
    result.promotion = promotion
    return result
