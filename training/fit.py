"""Fit LightGBM with early stopping on the validation window.

Categorical features go to LightGBM natively, as the codes of categories fixed from the
training window (`models.served.encoding.FeatureLayout`): the model is fitted on the same
matrix encoding that serving and batch scoring feed it, in float32. LightGBM bins float32
as it bins float64 up to float32 rounding (a bin edge lies between two distinct float32
values), and reads a column-major float32 matrix without copying it: the matrix takes half
the memory a float64 one took, and LightGBM makes no float32 copy of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.served.classifier import boosted_probability, offset_log_odds
from models.served.encoding import MISSING_CATEGORY, FeatureLayout

log = logging.getLogger(__name__)

# Sensible defaults for tabular risk models of this size; a model module overrides any.
DEFAULT_PARAMS: dict[str, object] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_cat_to_onehot": 8,
    "cat_smooth": 10.0,
    # One thread: on a shared 2-core machine two OpenMP threads ran 10x slower than one
    # (busy-waiting against other jobs); give more where cores are dedicated.
    "num_threads": 1,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}
DEFAULT_ROUNDS = 2000
DEFAULT_EARLY_STOPPING = 50


def layout_from_train(
    train: pd.DataFrame, features: list[str], categorical: list[str]
) -> FeatureLayout:
    """Fix the feature order and the categories seen in the training window.

    A missing categorical value is its own category, "(missing)", because for a contact
    reason or a last scan type "none yet" is information, not noise.
    """
    categories = {}
    for name in categorical:
        values = train[name].astype("string").fillna(MISSING_CATEGORY)
        categories[name] = tuple(sorted(set(values.astype(object))))
    return FeatureLayout(tuple(features), categories)


@dataclass
class FitResult:
    """A fitted booster and how it was fitted."""

    booster: lgb.Booster
    layout: FeatureLayout
    params: dict[str, object]
    best_iteration: int
    valid_score: float
    seconds: float
    offset: Callable[[pd.DataFrame], np.ndarray] | None = None

    def raw_score(self, data: pd.DataFrame) -> np.ndarray:
        """Uncalibrated probability of each row (the trees from `offset`'s log-odds, where
        they were fitted from them)."""
        return boosted_probability(
            self.booster, self.layout, self.layout.matrix(data), self.best_iteration, self.offset
        )


class SharedSets:
    """The LightGBM datasets of one pair of training and validation windows, binned once
    for every fit on exactly those rows and features, each with its own label and weights.

    Binning depends on the features alone (and the dataset settings, the same for every
    fit here), not on the label: a fit on the shared datasets grows the same trees as one
    on datasets of its own. On a million rows building and binning the matrix takes about
    nine seconds before the first tree. The first fit makes them from its frames; every
    later one must pass frames of the same rows (the same index, in the same order), with
    its own label and weight columns beside the same features.
    """

    def __init__(self, layout: FeatureLayout) -> None:
        self.layout = layout
        self._index: tuple[pd.Index, pd.Index] | None = None
        self._sets: tuple[lgb.Dataset, lgb.Dataset] | None = None

    def labelled(
        self, train: pd.DataFrame, valid: pd.DataFrame, label: str, weight: str | None
    ) -> tuple[lgb.Dataset, lgb.Dataset]:
        """The two datasets with `label` and `weight` (None: unweighted) of `train` and
        `valid`."""
        if self._sets is None:
            self._index = (train.index, valid.index)
            self._sets = _datasets(train, valid, self.layout, label, weight)
            return self._sets
        for held, frame in zip(self._index, (train, valid), strict=True):
            if not held.equals(frame.index):
                raise ValueError("a fit on shared datasets passed rows other than theirs")
        for dataset, frame in zip(self._sets, (train, valid), strict=True):
            dataset.set_label(frame[label].to_numpy(dtype=np.float32))
            weights = frame[weight].to_numpy(dtype=np.float32) if weight else None
            if weights is None or np.all(weights == 1):
                # `set_weight` keeps a dataset's earlier weights when handed none (or all
                # ones); an empty field clears them.
                dataset.weight = None
                dataset.set_field("weight", None)
            else:
                dataset.set_weight(weights)
        return self._sets


def _datasets(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    layout: FeatureLayout,
    label: str,
    weight: str | None,
    offset: Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> tuple[lgb.Dataset, lgb.Dataset]:
    """The training dataset of `train` (its matrix let go of once binned) and the validation
    dataset of `valid`, binned as the training one, each starting from the log-odds of
    `offset`'s probabilities where given."""

    def dataset(frame: pd.DataFrame, **options) -> lgb.Dataset:
        start = None
        if offset is not None:
            # From the scoring matrix, as a service that holds only the matrix adds it.
            start = offset_log_odds(offset, layout, layout.matrix(frame))
        return lgb.Dataset(
            layout.matrix(frame, np.float32),
            label=frame[label].to_numpy(dtype=np.float32),
            weight=frame[weight].to_numpy(dtype=np.float32) if weight else None,
            init_score=start,
            feature_name=list(layout.features),
            categorical_feature=layout.categorical_indices,
            **options,
        )

    train_set = dataset(train, free_raw_data=True)
    return train_set, dataset(valid, reference=train_set)


def fit_lightgbm(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    layout: FeatureLayout,
    label: str = "label",
    params: dict[str, object] | None = None,
    num_boost_round: int = DEFAULT_ROUNDS,
    early_stopping_rounds: int = DEFAULT_EARLY_STOPPING,
    weight: str | None = None,
    shared: SharedSets | None = None,
    offset: Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> FitResult:
    """Fit a binary LightGBM classifier, stopping when validation log loss stops improving.

    Args:
        train: Training rows with the feature columns and `label`.
        valid: Validation rows, same columns.
        layout: Feature order and categories (from `layout_from_train`).
        label: The 0/1 label column.
        params: LightGBM parameters, merged over `DEFAULT_PARAMS`.
        num_boost_round: Upper bound on trees.
        early_stopping_rounds: Rounds without improvement before stopping.
        weight: Column of row weights, in both windows (None: unweighted).
        shared: Datasets already binned from these rows and `layout`, given this fit's
            label and weights here (None: datasets of its own).
        offset: Rows → probabilities whose log-odds the trees start from (LightGBM's
            `init_score`), in both windows and wherever the fit scores (None: the mean).

    Raises:
        ValueError: An offset with shared datasets (binned without one).

    Returns:
        The booster, truncated to its best iteration when predicting.
    """
    merged = {**DEFAULT_PARAMS, **(params or {})}
    merged.setdefault("metric", "binary_logloss")
    started = time.perf_counter()
    if shared is None:
        train_set, valid_set = _datasets(train, valid, layout, label, weight, offset)
    elif offset is not None:
        raise ValueError("a fit from an offset makes datasets of its own, not shared ones")
    else:
        train_set, valid_set = shared.labelled(train, valid, label, weight)
    callbacks = [lgb.log_evaluation(period=0)]
    if early_stopping_rounds > 0:
        callbacks.append(lgb.early_stopping(early_stopping_rounds, verbose=False))
    booster = lgb.train(
        merged,
        train_set,
        num_boost_round=num_boost_round,
        valid_sets=[valid_set],
        valid_names=["validation"],
        callbacks=callbacks,
    )
    best = booster.best_iteration or booster.current_iteration()
    metric = str(merged["metric"])
    score = booster.best_score.get("validation", {}).get(metric, float("nan"))
    seconds = time.perf_counter() - started
    log.info(
        "fitted %d trees (best %d) in %.1f s; validation %s %.5f",
        booster.current_iteration(),
        best,
        seconds,
        metric,
        score,
    )
    return FitResult(booster, layout, merged, int(best), float(score), seconds, offset)
