"""Flow `train`: train, evaluate, log and register models on the current data.

Each model is one task: its label events and point-in-time features come from the current
raw and offline versions, its run goes to MLflow, and the registry's champion gate decides
whether it serves. Each task trains in a child process of its own (`Settings.train_isolated`).
"""

from __future__ import annotations

import logging

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from aftersale.console import report_stage
from aftersale.settings import get_settings
from features.build.parallel import watermark_of
from features.ingest import latest_raw
from features.store.config import feature_store
from flows.child import in_child_process
from models.spec import SplitError
from training.due import record_data_end
from training.report import ModelSummary, summarize
from training.trainer import TrainOptions

log = logging.getLogger(__name__)


def train_summary(
    name: str,
    tracking_uri: str | None = None,
    test_fraction: float | None = None,
    marked: bool = False,
) -> ModelSummary:
    """Train one model of `models.MODELS` with its kind's trainer, in this process, and
    summarise the run; `marked`: the monitor marked it (`train`)."""
    from models import MODELS
    from training.trainers import train_model as train_one

    spec = MODELS[name]
    settings = get_settings()
    raw = latest_raw(settings.raw_root)
    # The trainer reads the raw tables of `raw` itself and holds the only reference to them,
    # so that it can let them go once the rows are labelled (gigabytes at a million
    # customers), which a table held here would prevent.
    options = TrainOptions(
        tracking_uri=tracking_uri,
        test_fraction=test_fraction,
        refit=marked and settings.refit_marked,
        gate_margin=settings.marked_gate_margin if marked else 0.0,
    )
    result = train_one(spec, feature_store(settings), settings, options)
    if result.run_id is not None:
        # The pipeline measures a champion's age in the data's days (`training.due`).
        record_data_end(
            tracking_uri or settings.tracking_uri, result.run_id, watermark_of(raw, happened=True)
        )
    return summarize(spec, result, raw)


@task(cache_policy=NO_CACHE)
def train_model(
    name: str,
    tracking_uri: str | None = None,
    test_fraction: float | None = None,
    marked: bool = False,
) -> ModelSummary:
    """`train_summary` of one model, in a child process of its own unless
    `Settings.train_isolated` is off: what one model's training leaves in a process's heap
    then adds nothing to the next one's peak."""
    args = (name, tracking_uri, test_fraction, marked)
    if not get_settings().train_isolated:
        return train_summary(*args)
    return in_child_process(train_summary, *args)


@flow(name="train")
def train(
    models: list[str] | None = None,
    tracking_uri: str | None = None,
    test_fraction: float | None = None,
    skip_untrainable: bool = False,
    marked: list[str] | None = None,
) -> list[ModelSummary]:
    """Train the named models (default: all) one after another.

    Args:
        models: Names of `models.MODELS` (default: all).
        tracking_uri: MLflow URI (default: the settings').
        test_fraction: Share of label events, the latest, in the test window (default:
            each model's split).
        skip_untrainable: Skip optional models the data cannot train even when `models`
            names them (as the pipeline's due models do).
        marked: Models the monitor marked for retraining: a classifier among them serves
            its refit (`Settings.refit_marked`) and is promoted unless it falls more than
            `Settings.marked_gate_margin` below the champion (`training.trainer.TrainOptions`).

    Raises:
        ValueError: A name is not a known model.
        SplitError: The data cannot train a model named in `models` (unless
            `skip_untrainable`), or a required one (`models.REQUIRED_MODELS`); without
            `models`, optional ones are skipped.
    """
    from models import MODELS, REQUIRED_MODELS

    names = list(models or MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; known: {sorted(MODELS)}")
    summaries = []
    for name in names:
        with report_stage(f"train {name}") as stage:
            try:
                summary = train_model(name, tracking_uri, test_fraction, name in (marked or ()))
            except SplitError as exc:
                # Training everything, an optional model the data cannot train (too little
                # logged outreach, say) is left out: the service serves without it.
                if (models is not None and not skip_untrainable) or name in REQUIRED_MODELS:
                    raise
                log.warning("%s not trained: %s", name, exc)
                stage.note = "skipped: too little data"
                continue
            stage.rows, stage.unit = summary.test_rows, "test rows"
        summaries.append(summary)
    return summaries
