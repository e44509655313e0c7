"""The one interface every kind of trainer has: a declared model in, a `TrainResult` out.

    trainer(spec, store, settings, options) → TrainResult

`spec` is the model's declaration (`models.spec.ModelSpec`), `store` the Feast store to read
point-in-time features from, `settings` where data and the tracking store live, and
`options` what a caller may choose per run (`TrainOptions`). `training.trainers.TRAINERS`
maps each `models.spec.Kind` to its trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from feast import FeatureStore

    from aftersale.settings import Settings
    from models.spec import ModelSpec
    from training.register import Promotion


@dataclass(frozen=True)
class TrainOptions:
    """What a caller chooses for one training run.

    Attributes:
        tables: Raw tables (default: the current published raw version's `spec.tables`).
        tracking_uri: MLflow tracking and registry URI (default: the settings').
        register: Log to MLflow and register (False: train and evaluate only).
        test_fraction: The latest share of label events used as the test window (None:
            the model's own split).
        explain_rows: Test rows explained with SHAP.
        refit: Serve the recipe fitted on every labelled decision (`training.binary.refit`),
            with the trees and calibration of the time split's model, so the newest labels
            shape what is served. The test metrics and the champion gate stay those of the
            model fitted on the time split (binary classifiers).
        gate_margin: How far below the champion's test metric the new version may fall and
            still be promoted (binary classifiers; 0: it must beat the champion).
    """

    tables: Mapping[str, pa.Table] | None = None
    tracking_uri: str | None = None
    register: bool = True
    test_fraction: float | None = None
    explain_rows: int = 2000
    refit: bool = False
    gate_margin: float = 0.0


@dataclass
class TrainResult:
    """Everything a caller (CLI, flow, benchmark) reports about one training run.

    Attributes:
        name: Model name.
        primary_metric: Key of `metrics` (and `baseline_metrics`) that decides promotion.
        run_id: MLflow run id (None when not logged).
        version: Registered version (None when not registered).
        promotion: The champion gate's outcome (None when not registered).
        metrics: Test metrics of the model.
        baseline_metrics: Test metrics of the baseline on the same rows.
        validation_metrics: Validation metrics of the model (in-sample for its calibration:
            for reference only).
        calibration: Chosen method and what decided it.
        data_version: Digest of the inputs.
        features: Model input columns.
        split: Window spans and row counts.
        scores: Test rows with the model's and the baseline's outputs (benchmarks join the
            oracle onto these).
        model: The trained model (`models.served`).
        seconds: Wall time per stage.
    """

    name: str
    primary_metric: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    calibration: dict[str, object]
    data_version: str
    features: list[str]
    split: dict[str, str | int]
    scores: pd.DataFrame
    model: object
    run_id: str | None = None
    version: str | None = None
    promotion: Promotion | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class Trainer(Protocol):
    """Fits, evaluates, explains, logs and registers one kind of model."""

    def __call__(
        self, spec: ModelSpec, store: FeatureStore, settings: Settings, options: TrainOptions
    ) -> TrainResult: ...
