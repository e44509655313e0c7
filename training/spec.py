"""What a model is, as the generic training loop needs to know it.

Each module in `models/` builds one `ModelSpec`: entity, decision time, label, feature
service, categorical features, estimator settings, baseline, segments and primary metric.
How training works lives in `training/`; what is trained lives in `models/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from training.split import SplitConfig

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


@dataclass(frozen=True)
class ModelSpec:
    """One model, declared.

    Attributes:
        name: Registry and experiment name.
        entity: Join key(s) of the label events, as in the Feast entity.
        decision_time: When the model is asked, in words (documentation and run tags).
        raw_tables: Contract tables the label function reads.
        optional_tables: Contract tables the label function reads when a source has them.
        label_events: Raw tables → one row per decision: join keys, `event_timestamp`
            (UTC), `label` (0/1) and `label_ts` (when the label is known for certain,
            whatever it turns out to be).
        feature_service: Feast FeatureService name.
        categorical: Features passed to LightGBM as categories.
        baseline: Frame of retrieved and derived features → the baseline's scores.
        segments: Columns to report metrics by (from the features or the label events).
        primary_metric: Test metric that decides promotion (`training.register.HIGHER_IS_BETTER`).
        exclude: Retrieved columns not used as inputs (absolute instants: a model must not
            learn the calendar date).
        derived: Decision-time features from `features.build.derived.add_time_features`.
        params: LightGBM parameters over `training.fit.DEFAULT_PARAMS`.
        params_rule: Training window's labels → parameters over `params`, so capacity can
            follow the data's size by a rule applied identically to every dataset (None:
            `params` alone).
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
        max_events: Label events used at most; beyond it a seeded sample of whole entities
            is kept (None: all).
    """

    name: str
    entity: tuple[str, ...]
    decision_time: str
    raw_tables: tuple[str, ...]
    label_events: LabelFunction
    feature_service: str
    categorical: tuple[str, ...]
    baseline: BaselineFunction
    segments: tuple[str, ...]
    primary_metric: str = "roc_auc"
    exclude: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()
    params: dict[str, object] = field(default_factory=dict)
    params_rule: ParamsRule | None = None
    num_boost_round: int = 2000
    early_stopping_rounds: int = 50
    capacity: float = 0.05
    baseline_is_probability: bool = True
    split: SplitConfig = field(default_factory=SplitConfig)
    calibration_criterion: str = "brier"
    min_isotonic_rows: int = 0
    words: dict[str, str] = field(default_factory=dict)
    reports: ReportFunction | None = None
    max_events: int | None = DEFAULT_MAX_EVENTS
    optional_tables: tuple[str, ...] = ()
