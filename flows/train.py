"""Flow `train`: train, evaluate, log and register models on the current data.

Each model is one task: its label events and point-in-time features come from the current
raw and offline versions, its run goes to MLflow, and the registry's champion gate decides
whether it serves.
"""

from __future__ import annotations

from inspect import signature

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from aftersale.settings import get_settings
from features.ingest import latest_raw
from features.store.config import feature_store
from training.loop import load_raw_tables
from training.report import ModelSummary, summarize


@task(cache_policy=NO_CACHE)
def train_model(
    name: str, tracking_uri: str | None = None, test_fraction: float | None = None
) -> ModelSummary:
    """Train one model of `models.MODELS` and summarise the run."""
    from models import MODELS

    entry = MODELS[name]
    settings = get_settings()
    raw = latest_raw(settings.raw_root)
    tables = load_raw_tables(settings, entry.raw_tables, entry.optional_tables)
    # Only a chosen test fraction is passed on: trainers without the option keep working.
    options = {} if test_fraction is None else {"test_fraction": test_fraction}
    result = entry.train(
        feature_store(settings), settings, tables=tables, tracking_uri=tracking_uri, **options
    )
    return summarize(entry, result, raw)


@flow(name="train")
def train(
    models: list[str] | None = None,
    tracking_uri: str | None = None,
    test_fraction: float | None = None,
) -> list[ModelSummary]:
    """Train the named models (default: all) one after another.

    Args:
        models: Names of `models.MODELS` (default: all).
        tracking_uri: MLflow URI (default: the settings').
        test_fraction: Share of label events, the latest, in the test window (default:
            each model's split).

    Raises:
        ValueError: A name is not a known model, or a model's trainer has no test-fraction
            option while one is given.
    """
    from models import MODELS

    names = list(models or MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; known: {sorted(MODELS)}")
    if test_fraction is not None:
        fixed = [n for n in names if "test_fraction" not in signature(MODELS[n].train).parameters]
        if fixed:
            raise ValueError(f"models {fixed} have a fixed split: no test fraction can be set")
    return [train_model(name, tracking_uri, test_fraction) for name in names]
