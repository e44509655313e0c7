"""Flow `train`: train, evaluate, log and register models on the current data.

Each model is one task: its label events and point-in-time features come from the current
raw and offline versions, its run goes to MLflow, and the registry's champion gate decides
whether it serves. Each task trains in a child process of its own (`Settings.train_isolated`),
`Settings.train_processes` of them at a time.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed

from aftersale.console import Stage, report_stage
from aftersale.settings import get_settings
from features.build.parallel import watermark_of
from features.ingest import latest_raw
from features.store.config import feature_store
from flows.child import in_child_process
from models.spec import SplitError
from training.due import balanced_lanes, latest_train_seconds, longest_first, tag_training_run
from training.register import prepare_tracking_store
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

    started = time.perf_counter()
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
        # The pipeline measures a champion's age in the data's days (`training.due`), and
        # the flow starts the models that took longest first.
        tag_training_run(
            tracking_uri or settings.tracking_uri,
            result.run_id,
            watermark_of(raw, happened=True),
            time.perf_counter() - started,
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
    """Train the named models (default: all), `Settings.train_processes` at a time when each
    trains in its own process (`Settings.train_isolated`), else one after another.

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
        Exception: What a model's training raised; with several at a time, the first, once
            those running have ended (no further model starts after it).
    """
    from models import MODELS, REQUIRED_MODELS

    names = list(models or MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; known: {sorted(MODELS)}")
    settings = get_settings()
    at_once = min(settings.train_processes if settings.train_isolated else 1, len(names))
    may_skip = {
        name: (models is None or skip_untrainable) and name not in REQUIRED_MODELS for name in names
    }
    launch = {name: (name, tracking_uri, test_fraction, name in (marked or ())) for name in names}
    if at_once > 1:
        return _several_at_once(
            names, at_once, launch, may_skip, tracking_uri or settings.tracking_uri
        )
    summaries = []
    for name in names:
        with report_stage(f"train {name}") as stage:
            try:
                summary = train_model(*launch[name])
            except SplitError as exc:
                if not may_skip[name]:
                    raise
                _skipped(name, exc, stage)
                continue
            stage.rows, stage.unit = summary.test_rows, "test rows"
        summaries.append(summary)
    return summaries


def _skipped(name: str, error: SplitError, stage: Stage) -> None:
    """Training everything, an optional model the data cannot train (too little logged
    outreach, say) is left out: the service serves without it."""
    log.warning("%s not trained: %s", name, error)
    stage.note = "skipped: too little data"


def _several_at_once(
    names: list[str],
    at_once: int,
    launch: dict[str, tuple],
    may_skip: dict[str, bool],
    tracking_uri: str,
) -> list[ModelSummary]:
    """`train`'s models, `at_once` of them at a time (each in its own process), summarised
    in the order of `names`. Where every model's latest training time is recorded, they are
    planned in `at_once` lanes whose longest is as short as can be
    (`training.due.balanced_lanes`), each slot training its lane's models one after another
    and, once its lane is done, the next waiting model of the lane with the most left;
    otherwise any free slot starts the model whose latest training took longest
    (`longest_first`, a model without a record first). After a failure no other model
    starts; those running finish, and the first failure is raised."""
    # Each process would otherwise find an empty tracking store and create its tables at
    # the same moment as the others.
    prepare_tracking_store(tracking_uri)
    seconds = latest_train_seconds(tracking_uri, names)
    lanes = balanced_lanes(names, seconds, at_once)
    if lanes is not None:
        log.info(
            "training in %d lanes: %s",
            len(lanes),
            " | ".join(
                f"{', '.join(lane)} ({sum(seconds[n] for n in lane):,.0f} s last time)"
                for lane in lanes
            ),
        )
    else:
        # The longest started last would run on beside an idle slot.
        lanes = [longest_first(names, seconds)]
        if lanes[0] != names:
            log.info("training the longest first: %s", ", ".join(lanes[0]))

    def next_for(slot: int) -> str | None:
        """The model `slot` starts next: its own lane's, else the first waiting one of the
        lane with the most seconds left (one shared lane: the first waiting)."""
        own = lanes[slot] if slot < len(lanes) else []
        if own:
            return own.pop(0)
        waiting = [lane for lane in lanes if lane]
        if not waiting:
            return None
        fullest = max(waiting, key=lambda lane: sum(seconds.get(n, float("inf")) for n in lane))
        return fullest.pop(0)

    running: dict[PrefectFuture, tuple[int, str, AbstractContextManager[Stage], Stage]] = {}
    summaries: dict[str, ModelSummary] = {}
    failure: BaseException | None = None
    while running or (any(lanes) and failure is None):
        busy = {slot for slot, *_ in running.values()}
        for slot in range(at_once):
            if slot in busy or failure is not None or (name := next_for(slot)) is None:
                continue
            shown = report_stage(f"train {name}")
            running[train_model.submit(*launch[name])] = (slot, name, shown, shown.__enter__())
        future = next(as_completed(list(running)))
        _, name, shown, stage = running.pop(future)
        try:
            summary = future.result()
        except SplitError as exc:
            if may_skip[name]:
                _skipped(name, exc, stage)
                shown.__exit__(None, None, None)
                continue
            failure = failure or exc
            shown.__exit__(type(exc), exc, exc.__traceback__)
            continue
        except Exception as exc:
            failure = failure or exc
            shown.__exit__(type(exc), exc, exc.__traceback__)
            continue
        stage.rows, stage.unit = summary.test_rows, "test rows"
        shown.__exit__(None, None, None)
        summaries[name] = summary
    if failure is not None:
        raise failure
    return [summaries[name] for name in names if name in summaries]
