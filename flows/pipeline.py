"""Flow `pipeline`: the nightly job, end to end, on one source.

Ingest → build features → materialise → train (the due models only, `training.due`) →
score → monitor. Each stage publishes its outputs whole: raw data and feature tables as
versions behind a `current` link, champions as a registry alias, the queue and its history
as files renamed into place. The night stands or falls as one: when a stage up to scoring
fails, the raw data, features, champions and queue that were current before it are put
back, and `PipelineError` names the stage. The monitor runs once the night stands; its
failure (too little data, say) is logged and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from aftersale.console import report_stage
from aftersale.settings import Settings, get_settings
from features import versioned
from flows.build_features import build_features
from flows.ingest import ingest
from flows.lock import data_lock
from flows.monitor import monitor
from flows.score_batch import score_batch
from flows.train import train

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A stage of the night failed; what was current before the night serves on.

    Attributes:
        stage: The stage that failed: ingest, features, train or score.
    """

    def __init__(self, stage: str, error: Exception) -> None:
        self.stage = stage
        super().__init__(
            f"stage {stage} failed ({type(error).__name__}: {error}); the raw data, features, "
            "champions and queue of before the night still serve"
        )


@dataclass(frozen=True)
class Before:
    """What served before the night: put back if a stage fails."""

    raw: Path | None
    features: Path | None
    champions: dict[str, str | None]
    kept_batch: Path


@dataclass
class Night:
    """What one run of the pipeline produced.

    Attributes:
        raw: The current raw folder.
        features: The current offline feature version.
        due: The models that were due for training, each with why.
        models: Summaries of the models trained.
        queue: The day's outreach queue file.
        monitored: The monitor's results (empty when it could not run).
        monitor_error: Why the monitor could not run (None when it ran).
    """

    raw: Path
    features: Path
    due: dict[str, str]
    models: list = field(default_factory=list)
    queue: Path | None = None
    monitored: list = field(default_factory=list)
    monitor_error: str | None = None


@task(cache_policy=NO_CACHE)
def due_models(raw: Path) -> dict[str, str]:
    """The models to train on this data, each with why (`training.due`)."""
    from features.build.parallel import watermark_of
    from models import MODELS
    from training.due import models_due

    return models_due(get_settings(), MODELS, watermark_of(raw, happened=True))


@task(cache_policy=NO_CACHE)
def clear_retrained(names: list[str]) -> None:
    """Clear the retraining marks of the models trained tonight."""
    from models.served.retrain import clear

    clear(get_settings().monitoring_dir, *names)


def remember(settings: Settings) -> Before:
    """Note what serves now and keep the batch files, before the night changes them."""
    from models import MODELS
    from serving.queue import keep_batch
    from training.register import champion_versions

    return Before(
        raw=versioned.current(settings.raw_root),
        features=versioned.current(settings.features_dir),
        champions=champion_versions(settings.tracking_uri, MODELS),
        kept_batch=keep_batch(settings.serving_dir),
    )


def put_back(settings: Settings, before: Before) -> None:
    """Make what served before the night current again."""
    from serving.queue import restore_batch
    from training.register import restore_champions

    versioned.restore(settings.raw_root, before.raw)
    versioned.restore(settings.features_dir, before.features)
    restored = restore_champions(settings.tracking_uri, before.champions)
    if restored:
        log.warning("champions put back: %s", ", ".join(restored))
    restore_batch(settings.serving_dir, before.kept_batch)


@flow(name="pipeline")
def pipeline(
    source: Literal["simulator", "folder", "olist"] = "simulator",
    path: Path | None = None,
    customers: int | None = None,
    seed: int | None = None,
) -> Night:
    """Ingest a source (or a day's batch), build and materialise its features, train the
    due models, score the day's queue and monitor the champions.

    Raises:
        PipelineError: A stage up to scoring failed; the raw data, features, champions
            and queue of before the night were put back.
    """
    settings = get_settings()
    with data_lock(settings.data_dir):
        return _night(settings, source, path, customers, seed)


@dataclass
class Stage:
    """The stage a night is in, for `PipelineError` to name."""

    name: str


@contextmanager
def standing(settings: Settings, before: Before, first: str) -> Iterator[Stage]:
    """Run a night's stages: when one fails, put back what served `before` and raise
    `PipelineError` naming it; when they all ran, drop the kept batch files."""
    from serving.queue import drop_kept

    stage = Stage(first)
    try:
        yield stage
    except Exception as error:
        put_back(settings, before)
        raise PipelineError(stage.name, error) from error
    except BaseException:
        put_back(settings, before)
        raise
    drop_kept(before.kept_batch)


def _night(
    settings: Settings,
    source: Literal["simulator", "folder", "olist"],
    path: Path | None,
    customers: int | None,
    seed: int | None,
) -> Night:
    """The pipeline's stages, under the data folder's lock."""
    with standing(settings, remember(settings), "ingest") as stage:
        raw = ingest(source=source, path=path, customers=customers, seed=seed)
        stage.name = "features"
        features = build_features(materialize_to_online=True)
        stage.name = "train"
        due = due_models(raw)
        night = Night(raw=raw, features=features, due=due)
        if due:
            # A first night trains every model; optional ones the data cannot train yet
            # are skipped, as `aftersale train` skips them.
            from training.due import marked

            # A model the monitor marked is judged and served as such (`flows.train.train`).
            night.models = train(models=list(due), skip_untrainable=True, marked=marked(due))
        else:
            with report_stage("train") as shown:
                shown.note = "no model due"
        stage.name = "score"
        night.queue = score_batch()
    # Once the night stands: a mark rolled back with its champion would be lost.
    clear_retrained([summary.name for summary in night.models])
    try:
        night.monitored = monitor()
    except Exception as error:
        night.monitor_error = f"{type(error).__name__}: {error}"
        log.warning("monitor did not run: %s", night.monitor_error)
    return night
