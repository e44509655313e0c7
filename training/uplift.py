"""The uplift trainer: which outreach works on whom, learned from the randomised holdouts.

    logged outreach (sent and held out) → 90-day repurchase labels → point-in-time features
    as of each send (Feast) → time split → candidate learners (T, S, X, DR on LightGBM) →
    the best validation Qini wins → Qini, AUUC and the uplift at capacity on the test window,
    with bootstrap intervals, beside today's risk × assumed-uplift ranking and random
    targeting → intervals per predicted-uplift bin → SHAP of the winning effect → MLflow run
    (one child run per candidate) → registry version, `champion` when its test Qini beats the
    champion's on the same rows

Within an action the holdout is random, so sent and held-out rows are comparable; weights
1/e and 1/(1 − e) (e: the action's treated share in the training window) make actions held
out at different rates count alike, in the DR pseudo-outcomes and in every metric.

Why these learners and not causalml's: causalml 0.18 would add xgboost and the NVIDIA NCCL
wheels (hundreds of MB) to the lock for meta-learners that are a few lines each on the
LightGBM fitting the other models already use (`training.fit`); its uplift forests are
single-threaded Python-heavy trees, slower here than LightGBM by an order of magnitude.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore
from scipy.stats import norm

from aftersale.settings import Settings
from models.outreach_uplift import (
    ACTION,
    PROPENSITY,
    SECOND_OUTCOMES,
    TREATED,
    second_outcomes,
)
from models.policies.outreach import customer_value
from models.served.encoding import FeatureLayout
from models.served.registry import tracking
from models.served.uplift import PYFUNC_CODE, Term, UpliftIntervals, UpliftModel
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, ModelSpec
from training.data import (
    TrainingData,
    decision_features,
    decisions,
    feature_files,
    run_inputs,
    write_json,
)
from training.explain import write_explanations
from training.fit import SharedSets, fit_lightgbm, layout_from_train
from training.record import PromotionRule, RunRecord, log_and_register
from training.register import read_version
from training.split import SplitError, TimeSplit, time_split
from training.trainer import TrainOptions, TrainResult
from training.uplift_metrics import (
    Ranking,
    arm_difference,
    arm_weights,
    bootstrap_intervals,
    qini_coefficient,
    resample_counts,
    uplift_metrics,
)

log = logging.getLogger(__name__)

WEIGHT = "_weight"
TARGET = "_target"
R_WEIGHT = "_r_weight"
REGRESSION = {"objective": "regression", "metric": "l2"}
LEARNERS = ("action_means", "t_learner", "s_learner", "x_learner", "dr_learner", "r_learner")
# The learner a per-customer one must clearly beat to serve: each action's mean effect.
SIMPLEST = "action_means"
RANDOM_SEED = 11


@dataclass
class Fitted:
    """A candidate learner's model and its validation and test uplift."""

    learner: str
    model: UpliftModel
    valid: np.ndarray
    test: np.ndarray
    seconds: float


def _fit(
    train,
    valid,
    layout,
    target,
    spec: ModelSpec,
    weight: str | None = None,
    shared: SharedSets | None = None,
):
    """A LightGBM regression of `target`, early-stopped on the validation rows (on
    `shared` datasets of those rows where given)."""
    return fit_lightgbm(
        train,
        valid,
        layout,
        target,
        {**spec.params, **REGRESSION},
        spec.num_boost_round,
        spec.early_stopping_rounds,
        weight=weight,
        shared=shared,
    )


def _term(fitted, weight: str, treated: float | None = None) -> Term:
    return Term(fitted.booster, fitted.best_iteration, weight, treated)


def _outcome_models(train, valid, layout, spec):
    """Outcome models of the sent (f₁) and held-out (f₀) rows."""
    t_train, t_valid = train[TREATED].to_numpy(bool), valid[TREATED].to_numpy(bool)
    f1 = _fit(train[t_train], valid[t_valid], layout, LABEL, spec)
    f0 = _fit(train[~t_train], valid[~t_valid], layout, LABEL, spec)
    return f1, f0


class OutcomeModels:
    """The outcome models of the sent and held-out rows (f₁, f₀) of one pair of training
    and validation windows, fitted once however many learners read them.

    The T-, X- and DR-learners each fit the same two models on the same rows, with the same
    settings and seed: the same boosters. Fitting them once saves two of the three fits
    (on a million customers, about 80 s each time).
    """

    def __init__(self, train, valid, layout, spec) -> None:
        self._args = (train, valid, layout, spec)
        self._fitted: tuple | None = None

    def __call__(self) -> tuple:
        if self._fitted is None:
            self._fitted = _outcome_models(*self._args)
        return self._fitted


def learn(
    learner: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    layout: FeatureLayout,
    spec: ModelSpec,
    share: dict[str, float],
    words: dict[str, str],
    actions: tuple[str, ...],
    offsets: dict[str, float] | None = None,
    outcomes: OutcomeModels | None = None,
    shared: SharedSets | None = None,
) -> UpliftModel:
    """Fit one learner on the training rows (early stopping on the validation rows).

    Args:
        learner: One of `LEARNERS`.
        train, valid: Rows with the features, `action`, `treated`, `label` and `_weight`.
        layout: The features' layout (without `treated`).
        spec: The model (LightGBM settings).
        share: Action → treated share e(a) in the training window.
        words: Feature descriptions.
        actions: Actions learned.
        offsets: Action → its average effect in the training window (`action_effects`):
            the effect models (X, DR, R) learn the deviations from it.
        outcomes: The outcome models of `train` and `valid`, shared between learners
            (fitted here when None).
        shared: LightGBM datasets of all of `train` and `valid` (`training.fit.SharedSets`)
            for the fits on every row of both, binned once between learners (None: each
            fit bins its own).
    """
    offsets = offsets if offsets is not None else action_effects(train)
    outcomes = outcomes if outcomes is not None else OutcomeModels(train, valid, layout, spec)

    def model(terms, used=layout, start=None) -> UpliftModel:
        return UpliftModel(
            spec.name, learner, tuple(terms), used, actions, share, None, words, start or {}
        )

    def less_offset(frame: pd.DataFrame, target: np.ndarray) -> np.ndarray:
        return target - frame[ACTION].map(offsets).astype(np.float64).fillna(0.0).to_numpy()

    if learner == "action_means":
        return model([], start=offsets)

    if learner == "t_learner":
        f1, f0 = outcomes()
        return model([_term(f1, "+1"), _term(f0, "-1")])
    if learner == "s_learner":
        with_t = FeatureLayout((*layout.features, TREATED), dict(layout.categories))
        numeric = {TREATED: lambda f: f[TREATED].astype(np.float64)}
        f = _fit(train.assign(**numeric), valid.assign(**numeric), with_t, LABEL, spec)
        return model([_term(f, "+1", 1.0), _term(f, "-1", 0.0)], with_t)
    if learner == "x_learner":
        f1, f0 = outcomes()
        terms = []
        for arm, other, weight in ((False, f1, "e"), (True, f0, "1-e")):
            # Imputed effects: a sent row's outcome less its predicted untreated outcome,
            # a held-out row's predicted treated outcome less its outcome.
            rows = [frame[frame[TREATED].to_numpy(bool) == arm] for frame in (train, valid)]
            imputed = [
                r.assign(
                    **{
                        TARGET: less_offset(
                            r, (1 if arm else -1) * (r[LABEL].to_numpy() - other.raw_score(r))
                        )
                    }
                )
                for r in rows
            ]
            terms.append(_term(_fit(imputed[0], imputed[1], layout, TARGET, spec), weight))
        return model(terms, start=offsets)
    if learner == "dr_learner":
        pseudo_train = _pseudo_outcomes(train, layout, spec, share, cross_fit=True)
        f1, f0 = outcomes()
        pseudo_valid = _pseudo(valid, f1.raw_score(valid), f0.raw_score(valid), share)
        f = _fit(
            train.assign(**{TARGET: less_offset(train, pseudo_train)}),
            valid.assign(**{TARGET: less_offset(valid, pseudo_valid)}),
            layout,
            TARGET,
            spec,
            shared=shared,
        )
        return model([_term(f, "+1")], start=offsets)
    if learner == "r_learner":
        # Robinson's decomposition: Y − m(x) = (T − e)·τ(x) + noise, with m the outcome
        # model of all rows (sent and held out alike: the most data any model here sees),
        # cross-fitted on the training rows.
        m_train = _cross_fitted_outcome(train, layout, spec)
        m_valid = _fit(train, valid, layout, LABEL, spec, shared=shared).raw_score(valid)
        rows = []
        for frame, m in ((train, m_train), (valid, m_valid)):
            residual = frame[TREATED].to_numpy(np.float64) - frame[ACTION].map(share).to_numpy(
                np.float64
            )
            rows.append(
                frame.assign(
                    **{
                        TARGET: less_offset(
                            frame, (frame[LABEL].to_numpy(np.float64) - m) / residual
                        ),
                        R_WEIGHT: residual**2,
                    }
                )
            )
        f = _fit(rows[0], rows[1], layout, TARGET, spec, weight=R_WEIGHT, shared=shared)
        return model([_term(f, "+1")], start=offsets)
    raise ValueError(f"unknown learner {learner!r}; known {list(LEARNERS)}")


def _halves(rows: pd.DataFrame) -> np.ndarray:
    """Two halves of the customers, by a hash of their ids (the same in every run)."""
    return (pd.util.hash_pandas_object(rows["customer_id"], index=False).to_numpy() % 2) == 0


def _cross_fitted_outcome(train, layout, spec) -> np.ndarray:
    """m(x) = P(order | x, a) of each training row from a model fitted on the other half
    of the customers."""
    half = _halves(train)
    out = np.empty(len(train))
    for fold in (True, False):
        fit_rows = train[half != fold].sort_values(EVENT_TIME, kind="stable")
        cut = int(len(fit_rows) * 0.8)
        f = _fit(fit_rows.iloc[:cut], fit_rows.iloc[cut:], layout, LABEL, spec)
        out[half == fold] = f.raw_score(train[half == fold])
    return out


def action_effects(rows: pd.DataFrame) -> dict[str, float]:
    """Each action's average effect: its sent rows' outcome rate less its held-out rows'."""
    out = {}
    for action, part in rows.groupby(ACTION, sort=True):
        t = part[TREATED].to_numpy(bool)
        y = part[LABEL].to_numpy(np.float64)
        if t.any() and (~t).any():
            out[str(action)] = float(y[t].mean() - y[~t].mean())
    return out


def _pseudo(rows: pd.DataFrame, mu1, mu0, share: dict[str, float]) -> np.ndarray:
    """Doubly robust pseudo-outcomes: μ₁ − μ₀ + T(Y − μ₁)/e − (1 − T)(Y − μ₀)/(1 − e)."""
    y = rows[LABEL].to_numpy(np.float64)
    t = rows[TREATED].to_numpy(bool)
    e = rows[ACTION].map(share).to_numpy(np.float64)
    return mu1 - mu0 + t * (y - mu1) / e - (~t) * (y - mu0) / (1.0 - e)


def _pseudo_outcomes(train, layout, spec, share, cross_fit: bool) -> np.ndarray:
    """Pseudo-outcomes of the training rows, each from outcome models fitted on the other
    half of the customers (cross-fitting: a row's own outcome never fits its μ)."""
    half = _halves(train)
    out = np.empty(len(train))
    for fold in (True, False):
        fit_rows, apply_rows = train[half != fold], train[half == fold]
        # The other half's own rows stop the trees: no row of the applied fold is used.
        cut = int(len(fit_rows) * 0.8)
        order = fit_rows.sort_values(EVENT_TIME, kind="stable")
        f1, f0 = _outcome_models(order.iloc[:cut], order.iloc[cut:], layout, spec)
        out[half == fold] = _pseudo(
            apply_rows, f1.raw_score(apply_rows), f0.raw_score(apply_rows), share
        )
    return out


def intervals_from(
    predicted: np.ndarray, rows: pd.DataFrame, bins: int, level: float
) -> UpliftIntervals:
    """The observed uplift, with a normal interval, of the rows in each quantile bin of
    predicted uplift (weighted by arm)."""
    z = float(norm.ppf(0.5 + level / 2.0))
    edges = np.unique(np.quantile(predicted, np.linspace(0, 1, bins + 1)[1:-1]))
    which = np.searchsorted(edges, predicted, side="right")
    y = rows[LABEL].to_numpy(np.float64)
    t = rows[TREATED].to_numpy(bool)
    w = rows[WEIGHT].to_numpy(np.float64)
    low, high, observed = [], [], []
    for b in range(len(edges) + 1):
        parts = []
        for arm in (True, False):
            m = (which == b) & (t == arm)
            n = m.sum()
            mean = np.average(y[m], weights=w[m]) if n else np.nan
            parts.append((mean, mean * (1 - mean) / max(n, 1)))
        diff = parts[0][0] - parts[1][0]
        se = np.sqrt(parts[0][1] + parts[1][1])
        observed.append(float(diff))
        low.append(float(diff - z * se))
        high.append(float(diff + z * se))
    return UpliftIntervals(
        tuple(map(float, edges)), tuple(low), tuple(high), tuple(observed), level
    )


def _risk_model(train, valid, layout, spec, shared: SharedSets | None = None):
    """Today's risk: a classifier of no repurchase within 90 days on the same rows and
    features, treatment ignored (what the churn model scores)."""
    flip = {LABEL: lambda f: 1 - f[LABEL]}
    return fit_lightgbm(
        train.assign(**flip),
        valid.assign(**flip),
        layout,
        LABEL,
        dict(spec.params),
        spec.num_boost_round,
        spec.early_stopping_rounds,
        shared=shared,
    )


SECOND_COLUMNS = [
    "outcome",
    "action",
    "rows",
    "sent",
    "held_out",
    "sent_mean",
    "held_out_mean",
    "effect",
    "low",
    "high",
]


# What `second_effects` reads of each logged row.
LOGGED_COLUMNS = ("customer_id", EVENT_TIME, ACTION, "subject_id", TREATED)


def second_effects(rows: pd.DataFrame, tables, level: float = 0.9) -> pd.DataFrame:
    """The measured effect of each action on each second outcome that fits it
    (`models.outreach_uplift.SECOND_OUTCOMES`): its sent rows' mean less its held-out rows',
    with an interval, over the rows whose outcome window ended.

    Args:
        rows: Logged outreach rows: customer_id, event_timestamp, action, subject_id, treated.
        tables: The raw tables the outcomes are read from.
        level: The intervals' level.
    """
    outcomes = second_outcomes(rows, tables)
    action = rows[ACTION].to_numpy(dtype=object)
    treated = rows[TREATED].to_numpy(dtype=bool)
    out = []
    for name, (actions, _, _) in SECOND_OUTCOMES.items():
        values = outcomes[name].to_numpy(dtype=np.float64)
        for one in actions:
            keep = (action == one) & np.isfinite(values)
            if not keep.any():
                continue
            y, t = values[keep], treated[keep]
            effect, low, high = arm_difference(y, t, level)
            out.append(
                {
                    "outcome": name,
                    "action": one,
                    "rows": int(keep.sum()),
                    "sent": int(t.sum()),
                    "held_out": int((~t).sum()),
                    "sent_mean": float(y[t].mean()) if t.any() else np.nan,
                    "held_out_mean": float(y[~t].mean()) if (~t).any() else np.nan,
                    "effect": effect,
                    "low": low,
                    "high": high,
                }
            )
    return pd.DataFrame(out, columns=SECOND_COLUMNS)


def paired_wins(
    better: np.ndarray,
    base: np.ndarray,
    rows: pd.DataFrame,
    resamples: int = 200,
    seed: int = RANDOM_SEED,
) -> float:
    """The share of bootstrap resamples of `rows` (within each arm, the same rows for both
    rankings) in which `better`'s Qini exceeds `base`'s."""
    y = rows[LABEL].to_numpy(np.float64)
    treated = rows[TREATED].to_numpy(bool)
    weight = rows[WEIGHT].to_numpy(np.float64)
    ranked = [Ranking.of(s, y, treated, weight) for s in (better, base)]
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(resamples):
        counts = resample_counts(rng, treated)
        better_qini, base_qini = (qini_coefficient(r.resampled(counts)) for r in ranked)
        wins += better_qini > base_qini
    return wins / max(resamples, 1)


def _per_action(scores: pd.DataFrame, capacity: float) -> pd.DataFrame:
    """Test metrics per action: rows, arms, observed and mean predicted uplift, Qini."""
    rows = []
    for action, part in scores.groupby(ACTION, sort=True):
        t = part[TREATED].to_numpy(bool)
        metrics = uplift_metrics(
            part["score"].to_numpy(), part[LABEL].to_numpy(), t, part[WEIGHT], capacity
        )
        rows.append(
            {
                ACTION: action,
                "rows": len(part),
                "held_out": int((~t).sum()),
                "predicted_uplift_mean": float(part["score"].mean()),
                **metrics,
            }
        )
    return pd.DataFrame(rows)


@dataclass
class UpliftRows:
    """The rows an uplift model is trained, stopped and tested on, as `train_uplift` uses
    them.

    Attributes:
        spec: The model, with the run's test window.
        options: The run's options (defaults filled).
        versions: The data's version (`training.register.read_version`).
        second: Each action's measured effect on its second outcomes (`second_effects`),
            over every labelled row.
        data: The feature words and files (its frame has no rows: the windows hold them).
        features: Input columns (the customer's features and `action`).
        split: The time split.
        train, valid, test: The windows' rows of the learned actions, with `_weight`.
        share: Action → treated share e(a) in the training window.
        layout: The features' layout.
        learned: Actions with enough sent and held-out training rows to learn.
        skipped: Actions left out.
    """

    spec: ModelSpec
    options: TrainOptions
    versions: dict[str, str]
    second: pd.DataFrame
    data: TrainingData
    features: list[str]
    split: TimeSplit
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    share: dict[str, float]
    layout: FeatureLayout
    learned: tuple[str, ...]
    skipped: list[str]


def prepare_rows(
    spec: ModelSpec,
    store: FeatureStore,
    settings: Settings,
    options: TrainOptions | None = None,
) -> UpliftRows:
    """The training, validation and test rows of the uplift model, weighted by arm.

    Raises:
        SplitError: A window holds no held-out or no sent rows, or no action has enough of
            both to learn from.
    """
    spec, options, tables = run_inputs(spec, settings, options)
    decided = decisions(spec, tables)
    # What the raw tables are read for beyond the label events is done before the features
    # are retrieved, so that the tables (1.9 GiB at a million customers) are not held
    # beside the frame: the data's version and the second outcomes' effects.
    service = store.get_feature_service(spec.feature_service)
    versions = read_version(spec.tables, tables, feature_files(store, service))
    level = float(spec.options.get("interval", 0.9))
    second = second_effects(decided[list(LOGGED_COLUMNS)], tables, level)
    del tables
    # The split needs only the instants. A row purged from every window (its 90-day
    # outcome not known before the next window starts: a third of the rows at 1,000,000
    # customers) is neither learnt from nor measured, so its features are not retrieved;
    # each row's features are its own point in time, whatever other rows are asked for.
    split = time_split(decided, spec.split, EVENT_TIME, LABEL_KNOWN)
    seen = decided[ACTION].unique()
    windowed = np.sort(np.concatenate([w.index.to_numpy() for w in split.windows()]))
    decided = decided.loc[windowed]
    data = decision_features(spec, store, decided)
    del decided
    frame = data.frame
    features = [*data.features, ACTION]
    frame[TREATED] = frame[TREATED].astype(bool)
    train_rows, valid_rows, test_rows = (frame.loc[w.index] for w in split.windows())
    # The windows hold the rows from here on: the whole frame is not kept beside them.
    data = replace(data, frame=frame.iloc[:0].copy())  # a view would hold the whole frame
    del frame
    min_rows = int(spec.options.get("min_arm_rows", 30))
    counts = train_rows.groupby(ACTION)[TREATED].agg(["sum", "size"])
    counts["held_out"] = counts["size"] - counts["sum"]
    learned = tuple(
        sorted(counts.index[(counts["sum"] >= min_rows) & (counts["held_out"] >= min_rows)])
    )
    if not learned:
        raise SplitError(
            f"{spec.name}: no action has {min_rows} sent and {min_rows} held-out rows in the "
            f"training window ({counts.to_dict('index')}); these data cannot train it"
        )
    skipped = sorted(set(seen) - set(learned))
    if skipped:
        log.info("%s: too few rows to learn %s", spec.name, skipped)
    train_rows, valid_rows, test_rows = (
        r[r[ACTION].isin(learned)] for r in (train_rows, valid_rows, test_rows)
    )
    for name, rows in (("train", train_rows), ("validation", valid_rows), ("test", test_rows)):
        arms = rows[TREATED].nunique()
        if len(rows) == 0 or arms < 2 or rows[LABEL].nunique() < 2:
            raise SplitError(
                f"{spec.name}: the {name} window needs sent and held-out rows and both "
                f"outcomes ({len(rows)} rows); these data cannot train it"
            )
    share = train_rows.groupby(ACTION)[TREATED].mean().astype(float).to_dict()
    train_rows, valid_rows, test_rows = (
        r.assign(**{WEIGHT: arm_weights(r[TREATED].to_numpy(), r[ACTION].to_numpy())})
        for r in (train_rows, valid_rows, test_rows)
    )
    layout = layout_from_train(train_rows, features, list(spec.categorical))
    # A learned action keeps its category even where it is rare in training.
    layout = FeatureLayout(
        layout.features,
        {**layout.categories, ACTION: tuple(sorted(set(layout.categories[ACTION]) | set(learned)))},
    )
    return UpliftRows(
        spec,
        options,
        versions,
        second,
        data,
        features,
        split,
        train_rows,
        valid_rows,
        test_rows,
        share,
        layout,
        learned,
        skipped,
    )


def train_uplift(
    spec: ModelSpec,
    store: FeatureStore,
    settings: Settings,
    options: TrainOptions | None = None,
) -> TrainResult:
    """Train, compare, evaluate, explain, log and register the uplift model.

    Raises:
        SplitError: A window holds no held-out or no sent rows, or no action has enough of
            both to learn from.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    prepared = prepare_rows(spec, store, settings, options)
    spec, options, data = prepared.spec, prepared.options, prepared.data
    features, split, layout = prepared.features, prepared.split, prepared.layout
    train_rows, valid_rows, test_rows = prepared.train, prepared.valid, prepared.test
    share, learned, skipped = prepared.share, prepared.learned, prepared.skipped
    seconds["features"] = time.perf_counter() - started
    bins = int(spec.options.get("interval_bins", 5))
    level = float(spec.options.get("interval", 0.9))
    versions, second = prepared.versions, prepared.second

    candidates: dict[str, Fitted] = {}
    capacity = spec.capacity
    # Fitted by the first learner that reads them, whose time counts them.
    outcomes = OutcomeModels(train_rows, valid_rows, layout, spec)
    # Binned once for the fits on every training and validation row (DR's and R's effect
    # models, R's outcome model, today's risk).
    shared = SharedSets(layout)
    for learner in spec.options.get("learners", LEARNERS):
        clock = time.perf_counter()
        model = learn(
            learner,
            train_rows,
            valid_rows,
            layout,
            spec,
            share,
            data.words,
            learned,
            outcomes=outcomes,
            shared=shared,
        )
        candidates[learner] = Fitted(
            learner,
            model,
            model.predict(valid_rows),
            model.predict(test_rows),
            time.perf_counter() - clock,
        )
        seconds[f"fit_{learner}"] = candidates[learner].seconds

    def measured(rows: pd.DataFrame, score: np.ndarray) -> dict[str, float]:
        return uplift_metrics(
            score, rows[LABEL].to_numpy(), rows[TREATED].to_numpy(), rows[WEIGHT], capacity
        )

    table = pd.DataFrame(
        [
            {
                "learner": c.learner,
                **{f"validation_{k}": v for k, v in measured(valid_rows, c.valid).items()},
                **{f"test_{k}": v for k, v in measured(test_rows, c.test).items()},
                "fit_seconds": c.seconds,
            }
            for c in candidates.values()
        ]
    )
    # A learner whose predictions are all equal (an S-learner that never split on the
    # treatment predicts exactly zero) ranks nobody: its Qini is random targeting's, and it
    # would queue nothing. It wins only when every learner is so.
    table["ranks"] = [bool(np.ptp(c.valid) > 0) for c in candidates.values()]
    ranked = table.sort_values(["ranks", "validation_qini"], ascending=False, kind="stable")
    winner_row = ranked.iloc[0]
    winner = candidates[str(winner_row["learner"])]
    others = table[table["learner"] != winner.learner]
    against = ", ".join(f"{r.learner} {r.validation_qini:.5f}" for r in others.itertuples())
    why = f"{winner.learner} has the highest validation Qini, {winner_row['validation_qini']:.5f}"
    if against:
        why += f", against {against}"
    # A learner of per-customer effects must beat each action's mean effect clearly: on a
    # few thousand held-out rows a higher validation Qini is often noise, and noise in
    # per-customer effects, multiplied by the customer's value, fills the queue with actions
    # that do nothing (measured on the simulated default against its true effects).
    simplest = candidates.get(SIMPLEST)
    if simplest is not None and winner.learner != SIMPLEST and np.ptp(simplest.valid) > 0:
        share = paired_wins(
            winner.valid,
            simplest.valid,
            valid_rows,
            resamples=int(spec.options.get("bootstrap", 200)),
        )
        required = float(spec.options.get("beat_simplest", 0.9))
        if share < required:
            why = (
                f"{SIMPLEST}: {winner.learner} had the highest validation Qini but beat "
                f"{SIMPLEST} in only {share:.0%} of paired resamples (needs {required:.0%}); " + why
            )
            winner = simplest
        else:
            why += f"; it beat {SIMPLEST} in {share:.0%} of paired resamples"
    log.info("%s: %s", spec.name, why)

    model = replace(winner.model, intervals=intervals_from(winner.valid, valid_rows, bins, level))

    clock = time.perf_counter()
    risk = _risk_model(train_rows, valid_rows, layout, spec, shared)
    scores = test_rows[
        ["outreach_id", "customer_id", EVENT_TIME, ACTION, "channel", TREATED, PROPENSITY, LABEL]
    ].copy()
    scores[WEIGHT] = test_rows[WEIGHT].to_numpy()
    scores["score"] = winner.test
    scores["score_low"], scores["score_high"] = model.interval(winner.test)
    for c in candidates.values():
        scores[f"score_{c.learner}"] = c.test
    scores["risk"] = risk.raw_score(test_rows)
    scores["baseline"] = np.asarray(spec.baseline(scores), dtype=np.float64)
    scores["value"] = customer_value(test_rows["monetary_365d"])
    scores["cost"] = scores["channel"].map(settings.outreach_channel_cost).fillna(0.0).to_numpy()
    scores["random"] = np.random.default_rng(RANDOM_SEED).random(len(scores))
    y_test = scores[LABEL].to_numpy()
    treated_test = scores[TREATED].to_numpy()
    metrics = measured(test_rows, winner.test)
    baseline_metrics = measured(test_rows, scores["baseline"].to_numpy())
    random_metrics = measured(test_rows, scores["random"].to_numpy())
    validation_metrics = measured(valid_rows, winner.valid)
    intervals = bootstrap_intervals(
        {"model": winner.test, "baseline": scores["baseline"].to_numpy(),
         "random": scores["random"].to_numpy()},
        y_test,
        treated_test,
        scores[WEIGHT].to_numpy(),
        capacity,
        resamples=int(spec.options.get("bootstrap", 200)),
        level=level,
    )  # fmt: skip
    for row in intervals.itertuples():
        if row.ranking == "model":
            metrics[f"{row.metric}_low"], metrics[f"{row.metric}_high"] = row.low, row.high
    per_action = _per_action(scores, capacity)
    for row in second.itertuples():
        log.info(
            "%s: %s changes %s by %+.3f [%+.3f, %+.3f] (%d sent, %d held out)",
            spec.name,
            row.action,
            row.outcome,
            row.effect,
            row.low,
            row.high,
            row.sent,
            row.held_out,
        )
    seconds["evaluate"] = time.perf_counter() - clock
    log.info(
        "%s test: Qini %.5f [%.5f, %.5f] (today's ranking %.5f, random %.5f) on %d rows",
        spec.name,
        metrics["qini"],
        metrics["qini_low"],
        metrics["qini_high"],
        baseline_metrics["qini"],
        random_metrics["qini"],
        len(test_rows),
    )

    result = TrainResult(
        name=spec.name,
        primary_metric=spec.primary_metric,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        validation_metrics=validation_metrics,
        calibration={"learner": winner.learner, "why": why, "candidates": table.to_dict("records")},
        data_version=versions["data_version"],
        features=features,
        split=split.summary(),
        scores=scores.reset_index(drop=True),
        model=model,
        seconds=seconds,
    )
    if not options.register:
        seconds["total"] = time.perf_counter() - started
        return result

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        clock = time.perf_counter()
        plain = FeatureLayout(tuple(model.features), dict(model.layout.categories))
        explained = write_explanations(
            None,
            plain,
            test_rows,
            data.words,
            out / "explain",
            rows=options.explain_rows,
            contributions_of=model.contributions,
        )
        seconds["explain"] = time.perf_counter() - clock
        clock = time.perf_counter()
        evaluation = {
            "candidates.csv": table,
            "test_intervals.csv": intervals,
            "per_action.csv": per_action,
            "second_outcomes.csv": second,
        }
        files = {"evaluation": [], "explain": list(explained.values())}
        for name, frame_out in evaluation.items():
            frame_out.to_csv(out / name, index=False)
            files["evaluation"].append(out / name)
        files["evaluation"].append(write_json(out / "intervals.json", model.intervals.to_dict()))
        logged = {f"test_{k}": v for k, v in metrics.items()}
        logged |= {f"test_baseline_{k}": v for k, v in baseline_metrics.items()}
        logged |= {f"test_random_{k}": v for k, v in random_metrics.items()}
        logged |= {f"validation_{k}": v for k, v in validation_metrics.items()}
        for r in per_action.itertuples():
            logged[f"test_action_{r.action}_qini"] = r.qini
            logged[f"test_action_{r.action}_observed_uplift"] = r.observed_uplift
            logged[f"test_action_{r.action}_predicted_uplift"] = r.predicted_uplift_mean
        for r in second.itertuples():
            for key in ("effect", "low", "high"):
                logged[f"second_{r.outcome}_{r.action}_{key}"] = getattr(r, key)
        record = RunRecord(
            spec=spec,
            result=result,
            params={
                **{f"lgbm_{k}": v for k, v in {**spec.params, **REGRESSION}.items()},
                "learner": winner.learner,
                "learners": ",".join(candidates),
                "learned_actions": ",".join(learned),
                "skipped_actions": ",".join(skipped),
                "treated_share": share,
                "capacity": capacity,
            },
            metrics=logged,
            files=files,
            words=data.words,
            digests=versions,
            input_example=test_rows,
            signature_rows=(valid_rows, test_rows),
            promotion=PromotionRule(
                model.input_frame(test_rows), champion_metric=_qini_of(test_rows, capacity)
            ),
            version_tags={"learner": winner.learner, "why": why[:500]},
            python_model=PYFUNC_CODE,
        )
        result = log_and_register(record, settings, out, options.tracking_uri)
        _log_candidates(
            result.run_id, spec.name, table, options.tracking_uri or settings.tracking_uri, why
        )
        seconds["log"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started
    log.info("%s: trained in %.1f s (%s)", spec.name, seconds["total"], seconds)
    return result


def _qini_of(rows: pd.DataFrame, capacity: float) -> Callable[[np.ndarray], float]:
    def qini(scores: np.ndarray) -> float:
        return uplift_metrics(
            scores, rows[LABEL].to_numpy(), rows[TREATED].to_numpy(), rows[WEIGHT], capacity
        )["qini"]

    return qini


def _log_candidates(run_id: str | None, experiment: str, table: pd.DataFrame, uri: str, why: str):
    """One child run per candidate learner under the run, with its validation and test
    metrics, so the comparison reads in MLflow's run table."""
    if run_id is None:
        return
    import mlflow

    with tracking(uri):
        client = mlflow.MlflowClient()
        parent = client.get_run(run_id)
        client.set_tag(run_id, "winner_reason", why)
        for row in table.to_dict("records"):
            child = client.create_run(
                parent.info.experiment_id,
                run_name=f"{experiment}-{row['learner']}",
                tags={"mlflow.parentRunId": run_id, "candidate": row["learner"]},
            )
            for key, value in row.items():
                if key != "learner" and np.isfinite(value):
                    client.log_metric(child.info.run_id, key, float(value))
            client.log_param(child.info.run_id, "learner", row["learner"])
            client.set_terminated(child.info.run_id)
