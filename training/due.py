"""Which models the nightly pipeline retrains.

A model is due when it has no champion, when its champion was trained on data that ended
`AFTERSALE_RETRAIN_DAYS` (default 7) or more days before the current data's end, or when
it is marked for retraining. The monitor writes the marks to
`<data_dir>/monitoring/retrain_due.json` as `{"<model>": {"since": "<ISO instant>",
"reason": "<words>"}}`, and counts once there is data newer than the champion's (rerunning
the day a champion was trained on leaves it be); a mark is cleared once its model was
retrained, whether or not the new version became champion.

Each training run is tagged with the data's end it saw (`DATA_END_TAG`), so the age of a
champion is measured in the data's time, not the wall clock: a replayed or simulated
history ages its champions as its days pass. It is also tagged with the seconds its
training took (`TRAIN_SECONDS_TAG`), from which the train flow plans which models share a
process slot (`balanced_lanes`), or starts the longest first where a model has no record
(`longest_first`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import pandas as pd

from aftersale.settings import Settings
from models.served.retrain import read_marks

DATA_END_TAG = "data_end"
TRAIN_SECONDS_TAG = "train_seconds"
MARKED = "marked: "
# `balanced_lanes` tries every assignment of models to lanes up to this many, else it gives
# the longest model next to the lane that ends soonest.
MAX_PLANS = 100_000


def due_reasons(
    names: Iterable[str],
    trained_through: Mapping[str, pd.Timestamp | None],
    marks: Mapping[str, dict],
    data_end: pd.Timestamp,
    period_days: int,
) -> dict[str, str]:
    """Why each due model is due; models not due are left out.

    Args:
        names: The models considered, in training order.
        trained_through: Each champion's data end at training (None: not recorded); a
            model missing here has no champion.
        marks: The monitor's marks (`models.served.retrain.read_marks`).
        data_end: The current data's end.
        period_days: Days of newer data after which a champion is retrained.
    """
    due = {}
    for name in names:
        trained = trained_through.get(name)
        # A mark calls for a retrain on newer data: a rerun of the day its champion was
        # trained on would learn the same model again.
        if name in marks and (trained is None or data_end > trained):
            due[name] = f"{MARKED}{marks[name].get('reason', 'no reason given')}"
        elif name not in trained_through:
            due[name] = "no champion"
        elif trained_through[name] is None:
            due[name] = "champion's data end not recorded"
        else:
            age = data_end - trained_through[name]
            if age >= pd.Timedelta(days=period_days):
                due[name] = f"champion's data is {age.days} days old"
    return due


def marked(due: Mapping[str, str]) -> list[str]:
    """The due models the monitor marked (`due_reasons`' reasons), in order."""
    return [name for name, why in due.items() if why.startswith(MARKED)]


def champions_trained_through(
    tracking_uri: str, names: Iterable[str]
) -> dict[str, pd.Timestamp | None]:
    """The data end each champion was trained on (None where its run has no record)."""
    from training.model_cards import champions

    found = {}
    for champion in champions(tracking_uri, names):
        tagged = _run_tags(tracking_uri, champion.run_id).get(DATA_END_TAG)
        found[champion.spec.name] = None if tagged is None else pd.Timestamp(tagged)
    return found


def models_due(settings: Settings, names: Iterable[str], data_end: pd.Timestamp) -> dict[str, str]:
    """The models to retrain on data ending at `data_end`, each with why, in `names` order."""
    names = list(names)
    trained_through = champions_trained_through(settings.tracking_uri, names)
    marks = read_marks(settings.monitoring_dir)
    return due_reasons(names, trained_through, marks, data_end, settings.retrain_days)


def tag_training_run(
    tracking_uri: str, run_id: str, data_end: pd.Timestamp, train_seconds: float | None = None
) -> None:
    """Tag a training run with the data's end it was trained on and, when given, the
    seconds its training took."""
    import mlflow

    from models.served.registry import tracking

    with tracking(tracking_uri):
        client = mlflow.MlflowClient()
        client.set_tag(run_id, DATA_END_TAG, data_end.isoformat())
        if train_seconds is not None:
            client.set_tag(run_id, TRAIN_SECONDS_TAG, f"{train_seconds:.1f}")


def latest_train_seconds(tracking_uri: str, names: Iterable[str]) -> dict[str, float]:
    """The seconds the latest recorded training of each model took (its newest run with
    `TRAIN_SECONDS_TAG`, whether or not it became champion); models without one are left
    out."""
    from training.model_cards import store_exists

    if not store_exists(tracking_uri):
        return {}
    import mlflow

    from models.served.registry import tracking

    found = {}
    with tracking(tracking_uri):
        client = mlflow.MlflowClient()
        for name in names:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                continue
            runs = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.{TRAIN_SECONDS_TAG} LIKE '%'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if runs:
                found[name] = float(runs[0].data.tags[TRAIN_SECONDS_TAG])
    return found


def longest_first(names: Iterable[str], seconds: Mapping[str, float]) -> list[str]:
    """`names` in the order to start them when several train at once: those whose last
    training took longest first, so that no long one starts last beside an idle slot; a
    model without a record counts as the longest (it may be), and ties keep their order."""
    return sorted(names, key=lambda name: -seconds.get(name, float("inf")))


def balanced_lanes(
    names: Iterable[str], seconds: Mapping[str, float], lanes: int
) -> list[list[str]] | None:
    """`names` split into at most `lanes` lanes, each trained one model after another, so
    that the lane that takes longest by the models' recorded `seconds` is as short as can
    be; each lane longest first. Every assignment is tried (the first model in the first
    lane: lanes are alike) where there are at most `MAX_PLANS`; beyond, each model,
    longest first, goes to the lane that ends soonest. None where a model has no record.

    Starting the longest first, whatever slot frees next, can leave the end badly balanced:
    at a million customers, uplift 861 s beside the window's 616 s, then offers 373 s took
    the window's slot and delay risk's 273 s came last (1,262 s), where uplift and offers
    beside the other three end at 1,234 s.
    """
    if lanes < 1:
        raise ValueError(f"lanes must be at least 1, got {lanes}")
    ordered = longest_first(names, seconds)
    if any(name not in seconds for name in ordered):
        return None
    if not ordered:
        return []
    lanes = min(lanes, len(ordered))
    if lanes ** (len(ordered) - 1) <= MAX_PLANS:
        best: tuple[float, tuple[int, ...]] | None = None
        for rest in itertools.product(range(lanes), repeat=len(ordered) - 1):
            choice = (0, *rest)
            loads = [0.0] * lanes
            for name, lane in zip(ordered, choice, strict=True):
                loads[lane] += seconds[name]
            if best is None or max(loads) < best[0]:
                best = (max(loads), choice)
        choice = best[1]
    else:
        loads = [0.0] * lanes
        picked = []
        for name in ordered:
            lane = min(range(lanes), key=loads.__getitem__)
            loads[lane] += seconds[name]
            picked.append(lane)
        choice = tuple(picked)
    plan: list[list[str]] = [[] for _ in range(lanes)]
    for name, lane in zip(ordered, choice, strict=True):
        plan[lane].append(name)
    return [lane for lane in plan if lane]


def _run_tags(tracking_uri: str, run_id: str) -> dict[str, str]:
    import mlflow

    from models.served.registry import tracking

    with tracking(tracking_uri):
        return dict(mlflow.MlflowClient().get_run(run_id).data.tags)
