"""A model's training data: its raw tables, label events and point-in-time features.

Every trainer starts here: the contract tables the model declares, its label events, the
Feast features as of each decision (`features.store.retrieval`), the decision-time
features (`features.build.derived`) and the words that describe them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
from feast import FeatureService, FeatureStore, RepoConfig

from aftersale.settings import Settings
from features.build.derived import add_time_features
from features.contract.io import read_validated
from features.frames import sorted_stably
from features.ingest import latest_raw
from features.store.retrieval import feature_names, historical_features, release_offline_memory
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, ModelSpec
from training.explain import TIME_FEATURE_WORDS
from training.trainer import TrainOptions

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Labelled decisions with their features, ready to split."""

    frame: pd.DataFrame
    features: list[str]
    service: FeatureService
    words: dict[str, str]
    feature_files: dict[str, Path]
    retrieval_s: float


def load_raw_tables(
    settings: Settings,
    names: tuple[str, ...],
    optional: tuple[str, ...] = (),
    columns: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, pa.Table]:
    """The named contract tables of the current published raw version.

    Args:
        settings: Where the published raw versions live.
        names: Tables that must be present.
        optional: Tables read when present.
        columns: Per table, the columns to read (default: all).

    Raises:
        FileNotFoundError: Nothing was ingested, or a needed table is absent.
    """
    folder = latest_raw(settings.raw_root)
    wanted = {n: list(c) for n, c in (columns or {}).items()}
    tables = read_validated(folder, tables=[*names, *optional], columns=wanted)
    missing = sorted(set(names) - set(tables))
    if missing:
        raise FileNotFoundError(f"tables {missing} not found in {folder}")
    return tables


def run_inputs(
    spec: ModelSpec, settings: Settings, options: TrainOptions | None
) -> tuple[ModelSpec, TrainOptions, Mapping[str, pa.Table]]:
    """What every trainer starts from: the options (defaults when None), the model with
    the run's test window and the settings' cap on its label events
    (`Settings.train_max_events`, where set), and the raw tables (the options' own, else
    the published version's `spec.tables`)."""
    options = options or TrainOptions()
    spec = spec.with_test_fraction(options.test_fraction)
    if settings.train_max_events is not None:
        spec = replace(spec, max_events=settings.train_max_events)
    tables = options.tables
    if tables is None:
        tables = load_raw_tables(settings, spec.raw_tables, spec.optional_tables)
    return spec, options, tables


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
    return decision_features(spec, store, decisions(spec, tables, events))


def decisions(
    spec: ModelSpec, tables: Mapping[str, pa.Table] | None, events: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The label events `training_data` retrieves features for: checked, sampled to at
    most `spec.max_events` (`sample_entities`) and in time order (RangeIndex).

    A trainer that reads the raw tables for more than the label events does so from these
    and can drop the tables before the features are retrieved.

    Raises:
        ValueError: No tables and no events, or the events lack a required column.
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
    return sorted_stably(events, [EVENT_TIME, *spec.entity]).reset_index(drop=True)


def decision_features(spec: ModelSpec, store: FeatureStore, events: pd.DataFrame) -> TrainingData:
    """`decisions` joined with their point-in-time features and decision-time features
    (the frame is the retrieval's own: `events` is not modified).

    Raises:
        ValueError: A declared feature is not produced by the service or the derived
            features.
    """
    service = store.get_feature_service(spec.feature_service)
    started = time.perf_counter()
    frame = historical_features(store, events, service)
    retrieval_s = time.perf_counter() - started
    # DuckDB would hold its buffers through the fit and the next models' training.
    release_offline_memory(store)
    # The frame retrieved is this function's own: the derived columns go into it.
    frame = add_time_features(frame, frame[EVENT_TIME], copy=False)
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


def retrieved_frame(spec: ModelSpec, config: RepoConfig, events: pd.DataFrame) -> pd.DataFrame:
    """`decision_features(...).frame` of `events` from a store made of `config` where this
    runs: on a cluster's worker, which retrieves its own share of a training window (a
    store does not pickle; its configuration does)."""
    return decision_features(spec, FeatureStore(config=config), events).frame


# pandas' own hash key: the label events' sample (`decisions`) is drawn with it.
EVENTS_HASH_KEY = "0123456789123456"


def sample_entities(
    events: pd.DataFrame, keys: list[str], limit: int | None, hash_key: str = EVENTS_HASH_KEY
) -> pd.DataFrame:
    """At most about `limit` label events, keeping every decision of a sample of entities.

    Whole entities are kept or left (by a hash of their keys, so the sample is the same in
    every run and window): a shipment's or customer's decisions stay together, and the time
    split still sees each kept entity's whole history. Memory then stays bounded at scale.
    A sample drawn from a sample takes a `hash_key` (16 characters) of its own: with the
    same key it would keep the rows the first one kept, not a share of them.
    """
    if limit is None or len(events) <= limit:
        return events
    share = limit / len(events)
    hashed = pd.util.hash_pandas_object(events[keys], index=False, hash_key=hash_key).to_numpy()
    keep = (hashed % 1_000_003) < share * 1_000_003
    log.info(
        "sampled %.1f%% of entities: %d of %d label events", 100 * share, keep.sum(), len(events)
    )
    return events[keep]


def write_json(path: Path, data: object) -> Path:
    """Write `data` as indented JSON; the path."""
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
