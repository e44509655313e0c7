"""What the `train` flow, the CLI and the demo need to know about a model.

A binary classifier is a `training.spec.ModelSpec` trained by the generic loop; models with
another shape (a policy evaluated off-policy, a delivery-date window) bring their own
trainer. Either way each model module exposes one `ModelEntry`, and `models.MODELS` lists
them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.metrics import roc_auc_score

from training.loop import TrainResult, train
from training.spec import LABEL, ModelSpec

# (store, settings, *, tables=None, tracking_uri=None, register=True[, test_fraction=None])
# → TrainResult; a trainer taking `test_fraction` makes its test window that last share.
Trainer = Callable[..., TrainResult]


@dataclass(frozen=True)
class OracleComparison:
    """Model, baseline and oracle measured with one metric on the same test rows."""

    rows: int
    model: float
    baseline: float
    oracle: float


# (the run's result, the simulator's `_truth/` folder) → the comparison
OracleFunction = Callable[[TrainResult, Path], OracleComparison]


@dataclass(frozen=True)
class ModelEntry:
    """One trainable model.

    Attributes:
        name: Registry name.
        raw_tables: Contract tables its labels (and evaluation) read.
        optional_tables: Contract tables read when the data have them.
        train: The trainer.
        metric: Human label of the primary test metric ("test AUC", "policy value").
        oracle: Scores the simulator's best achievable on the run's test rows; None when the
            model has no oracle.
    """

    name: str
    raw_tables: tuple[str, ...]
    train: Trainer
    metric: str
    oracle: OracleFunction | None = None
    optional_tables: tuple[str, ...] = ()


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present."""
    y = np.asarray(y)
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def auc_oracle(truth_scores: Callable[[pd.DataFrame, Path], pd.DataFrame]) -> OracleFunction:
    """An oracle comparison by ROC AUC from a function that adds an `oracle` column to the
    test rows the truth can score (and drops the others)."""

    def compare(result: TrainResult, truth_dir: Path) -> OracleComparison:
        rows = truth_scores(result.scores, truth_dir)
        y = rows[LABEL].to_numpy()
        return OracleComparison(
            rows=len(rows),
            model=auc(y, rows["score"].to_numpy()),
            baseline=auc(y, rows["baseline"].to_numpy()),
            oracle=auc(y, rows["oracle"].to_numpy()),
        )

    return compare


def binary_entry(
    spec: ModelSpec,
    truth_scores: Callable[[pd.DataFrame, Path], pd.DataFrame] | None = None,
) -> ModelEntry:
    """The entry of a binary classifier trained by the generic loop."""

    def trainer(
        store,
        settings,
        *,
        tables: Mapping[str, pa.Table] | None = None,
        tracking_uri: str | None = None,
        register: bool = True,
        test_fraction: float | None = None,
    ) -> TrainResult:
        chosen = spec
        if test_fraction is not None:
            chosen = replace(spec, split=spec.split.with_test_fraction(test_fraction))
        return train(
            chosen, store, settings, tables=tables, tracking_uri=tracking_uri, register=register
        )

    label = "test AUC" if spec.primary_metric == "roc_auc" else f"test {spec.primary_metric}"
    return ModelEntry(
        name=spec.name,
        raw_tables=spec.raw_tables,
        train=trainer,
        metric=label,
        oracle=auc_oracle(truth_scores) if truth_scores is not None else None,
        optional_tables=spec.optional_tables,
    )
