"""What a model is: the declaration each module in `models/` makes, and nothing of how.

A `ModelSpec` names the entity, the decision time, the label, the Feast feature service,
the categorical features, the estimator's settings, the baseline, the segments, the tables
it needs and the kind of trainer that fits it. How any kind is fitted, evaluated,
explained and logged lives in `training/` (`training.trainers.TRAINERS`), which reads
these declarations; nothing here imports training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
import pandas as pd
import pyarrow as pa

# Label events a model trains and is tested on at most (whole entities are sampled beyond
# it): about 3M rows of ~60 features keep a run within a few GiB on one machine.
DEFAULT_MAX_EVENTS = 3_000_000

# Columns every label-event frame carries, besides the entity's join keys.
EVENT_TIME = "event_timestamp"
LABEL = "label"
LABEL_KNOWN = "label_ts"

LabelFunction = Callable[[dict[str, pa.Table]], pd.DataFrame]
BaselineFunction = Callable[[pd.DataFrame], np.ndarray]
ReportFunction = Callable[[pd.DataFrame, pd.DataFrame], dict[str, pd.DataFrame]]
ParamsRule = Callable[[pd.Series], dict[str, object]]
OffsetRule = Callable[[pd.Series], bool]


class Kind(StrEnum):
    """The kinds of model, each fitted by its own trainer (`training.trainers.TRAINERS`)."""

    # A calibrated probability of a 0/1 label (delay risk, churn).
    BINARY = "binary"
    # An acceptance model whose policy is valued off-policy (next-best offer).
    POLICY = "policy"
    # Quantiles of the time to an event with a conformal window (delivery estimate).
    WINDOW = "window"
    # The effect of a treatment on a 0/1 outcome, learned from randomised holdouts
    # (outreach uplift).
    UPLIFT = "uplift"


class SplitError(ValueError):
    """The windows overlap, are out of order, or one of them holds no rows (or, for a
    classifier, labels of one class only)."""


@dataclass(frozen=True)
class SplitConfig:
    """How to cut the label events into windows.

    Attributes:
        fractions: Shares of rows for train, validation and test, in time order; they are
            normalised, so (3, 1, 1) works as well as (0.6, 0.2, 0.2).
        purge: Drop rows of train (validation) whose label is known only at or after the
            validation (test) window starts; needs a label-known column.
        boundaries: Explicit window starts (validation start, test start); overrides
            `fractions` when given.
    """

    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    purge: bool = True
    boundaries: tuple[pd.Timestamp, pd.Timestamp] | None = None

    def with_test_fraction(self, test: float) -> SplitConfig:
        """The same split with the last `test` share of rows as the test window; validation
        keeps its share of what comes before.

        Raises:
            SplitError: `test` is not strictly between 0 and 1.
        """
        if not 0.0 < test < 1.0:
            raise SplitError(f"the test fraction must lie strictly between 0 and 1, got {test}")
        train, validation, _ = (float(f) for f in self.fractions)
        earlier = 1.0 - test
        share = validation / (train + validation)
        return SplitConfig(
            fractions=(earlier * (1.0 - share), earlier * share, test), purge=self.purge
        )


@dataclass(frozen=True)
class ModelSpec:
    """One model, declared.

    Attributes:
        name: Registry and experiment name.
        kind: Which trainer fits it.
        metric_label: The primary test metric in words ("test AUC"), for tables.
        entity: Join key(s) of the label events, as in the Feast entity.
        decision_time: When the model is asked, in words (documentation and run tags).
        raw_tables: Contract tables the label function reads.
        optional_tables: Contract tables the label function reads when a source has them.
        label_events: Raw tables → one row per decision: join keys, `event_timestamp`
            (UTC), `label` (the target: 0/1 for a binary or policy model, log hours to the
            event for a window model) and `label_ts` (when the label is known for certain,
            whatever it turns out to be).
        feature_service: Feast FeatureService name.
        categorical: Features passed to LightGBM as categories.
        baseline: Frame of retrieved and derived features → the baseline's scores.
        segments: Columns to report metrics by (from the features or the label events).
        primary_metric: Test metric that decides promotion.
        higher_is_better: The primary metric's direction.
        exclude: Retrieved columns not used as inputs (absolute instants: a model must not
            learn the calendar date).
        derived: Decision-time features from `features.build.derived.add_time_features`.
        params: LightGBM parameters over `training.fit.DEFAULT_PARAMS`.
        params_rule: Training window's labels → parameters over `params`, so capacity can
            follow the data's size by a rule applied identically to every dataset (None:
            `params` alone).
        offset_rule: Training window's labels → whether the trees start from the log-odds
            of the baseline (LightGBM's `init_score`, kept by the served model) rather than
            from the window's mean (None: never).
        num_boost_round: Upper bound on trees.
        early_stopping_rounds: Patience on the validation log loss.
        capacity: Rows the team can act on (share < 1 or count) for precision/recall@k.
        baseline_is_probability: Whether Brier and ECE make sense for the baseline.
        split: Time-split fractions and purging.
        calibration_criterion: "brier" or "log_loss".
        min_isotonic_rows: Validation rows below which isotonic calibration is not a
            candidate (0: always one).
        words: Feature → description for reason codes (Feast descriptions fill the rest).
        reports: (all labelled rows, scored test rows) → extra tables logged as artifacts.
        report_columns: The columns `reports` reads of all labelled rows: on a Dask cluster
            only these come back from the workers that retrieved the training window (none
            named: every column).
        max_events: Label events used at most; beyond it a seeded sample of whole entities
            is kept (None: all).
        options: Settings of the model's kind (a window's coverage and conformal groups).
    """

    name: str
    kind: Kind
    metric_label: str
    entity: tuple[str, ...]
    decision_time: str
    raw_tables: tuple[str, ...]
    label_events: LabelFunction
    feature_service: str
    categorical: tuple[str, ...]
    baseline: BaselineFunction
    segments: tuple[str, ...]
    primary_metric: str = "roc_auc"
    higher_is_better: bool = True
    exclude: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()
    params: dict[str, object] = field(default_factory=dict)
    params_rule: ParamsRule | None = None
    offset_rule: OffsetRule | None = None
    num_boost_round: int = 2000
    early_stopping_rounds: int = 50
    capacity: float = 0.05
    baseline_is_probability: bool = True
    split: SplitConfig = field(default_factory=SplitConfig)
    calibration_criterion: str = "brier"
    min_isotonic_rows: int = 0
    words: dict[str, str] = field(default_factory=dict)
    reports: ReportFunction | None = None
    report_columns: tuple[str, ...] = ()
    max_events: int | None = DEFAULT_MAX_EVENTS
    optional_tables: tuple[str, ...] = ()
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def tables(self) -> tuple[str, ...]:
        """Every contract table it reads, required then optional."""
        return (*self.raw_tables, *self.optional_tables)

    def with_test_fraction(self, test: float | None) -> ModelSpec:
        """The same model with the latest `test` share of label events as its test window
        (None: unchanged)."""
        return self if test is None else replace(self, split=self.split.with_test_fraction(test))
