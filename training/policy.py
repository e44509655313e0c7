"""Training a policy from logged offers: an acceptance model, valued off-policy.

    logged offers → point-in-time features (Feast) → time split → LightGBM acceptance model
    → calibration → every candidate action of every test decision scored → the served
    policy (best allowed expected value, showing nothing included) and the baselines valued
    by IPS, SNIPS and DR → SHAP → MLflow run → registry version, `challenger`, `champion`
    when its DR value beats the champion's on the same test decisions

The model is a binary classifier (p(accept | customer, context, action)) and is stored like
the others (`models.served.classifier.CalibratedModel`); the policy is "score every allowed
candidate, take the highest p × value, showing nothing when no offer is worth more", which
`models.policies.offers.ranked_offers` defines for training and the service alike.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore

from aftersale.settings import Settings
from features.instants import utc_times
from features.store.retrieval import feature_names, historical_features_of, release_offline_memory
from models import next_best_offer as nbo
from models.policies import offers as offer_policy
from models.served.classifier import CalibratedModel
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, ModelSpec
from training.calibrate import choose_arm_calibration, choose_calibrator
from training.data import feature_files, feature_words, run_inputs, sample_entities
from training.evaluate import binary_metrics, reliability_plot
from training.explain import write_explanations
from training.fit import fit_lightgbm, layout_from_train
from training.offpolicy import PolicyValue, evaluate_policy, uniform
from training.record import PromotionRule, RunRecord, log_and_register
from training.register import champion_scorer, data_version
from training.split import time_split
from training.trainer import TrainOptions, TrainResult

log = logging.getLogger(__name__)

POLICIES = ("model", "popularity", "random", "logging")
BUY_ANYWAY_QUANTILE = 0.75
MAX_WEIGHT = 50.0
MAX_EVALUATED_DECISIONS = 200_000
# Decisions whose candidates are read and scored at once.
CANDIDATE_DECISIONS = 20_000
# What a run's scores keep of each candidate.
SCORED_COLUMNS = (
    "decision",
    "action",
    "customer_id",
    EVENT_TIME,
    "category",
    "offer_type",
    "discount",
    "parcel_late",
    "returned_before",
    "value",
)
# What the valuation and the run's scores read of each candidate once it is scored.
CANDIDATE_COLUMNS = (*SCORED_COLUMNS, "category_returns_total")
SAMPLE_SEED = 7


def returned_before(tables: Mapping[str, pa.Table], frame: pd.DataFrame) -> np.ndarray:
    """Whether each row's customer requested a return of its category before its time."""
    returns = tables["returns"].select(["order_id", "product_id", "requested_ts"]).to_pandas()
    # Only the asked customers' orders: a return counts for its own customer alone.
    orders = tables["orders"].select(["order_id", "customer_id"])
    customers = pa.array(
        pd.unique(frame["customer_id"].astype(object)), orders.schema.field("customer_id").type
    )
    orders = orders.filter(pc.is_in(orders.column("customer_id"), value_set=customers)).to_pandas()
    products = tables["products"].select(["product_id", "category"]).to_pandas()
    first = (
        returns.merge(orders, on="order_id")
        .merge(products, on="product_id")
        .groupby(["customer_id", "category"])["requested_ts"]
        .min()
    )
    keys = pd.MultiIndex.from_arrays(
        [frame["customer_id"].to_numpy(), frame["category"].to_numpy(object)]
    )
    # Compared as instants: `to_numpy` of a zoned column makes one object per row.
    at = pd.DatetimeIndex(utc_times(frame[EVENT_TIME]))
    when = pd.DatetimeIndex(utc_times(first.reindex(keys)))
    return np.asarray(when.notna() & (when < at))


def offer_features(
    spec: ModelSpec, store: FeatureStore, frame: pd.DataFrame
) -> tuple[pd.DataFrame, list[str]]:
    """Offer decisions (customer, category, order, instant and the offer's own columns) with
    their point-in-time features and decision features, and the model's input names."""
    (out,), names = offer_features_of(spec, store, [frame])
    return out, names


def offer_features_of(
    spec: ModelSpec, store: FeatureStore, frames: list[pd.DataFrame]
) -> tuple[list[pd.DataFrame], list[str]]:
    """`offer_features` of several frames of decisions, their features read at once
    (`historical_features_of`)."""
    service = store.get_feature_service(spec.feature_service)
    retrieved = historical_features_of(store, frames, service)
    release_offline_memory(store)
    out = [nbo.decision_features(r, r[EVENT_TIME]) for r in retrieved]
    return out, offer_feature_names(spec, store)


def offer_feature_names(spec: ModelSpec, store: FeatureStore) -> list[str]:
    """The model's input names of `offer_features`' frames."""
    service = store.get_feature_service(spec.feature_service)
    names = [n for n in feature_names(store, service) if n not in spec.exclude]
    return [*nbo.DECISION_COLUMNS, *names, *spec.derived]


def _policy_table(values: dict[str, PolicyValue], on_policy: tuple[float, float]) -> pd.DataFrame:
    rows = []
    for name, value in values.items():
        low, high = value.interval("dr")
        rows.append(
            {
                "policy": name,
                "ips": value.ips,
                "ips_se": value.ips_se,
                "snips": value.snips,
                "dr": value.dr,
                "dr_low": low,
                "dr_high": high,
                "matched": value.matched,
                "effective_n": value.effective_n,
                "rows": value.rows,
            }
        )
    mean, se = on_policy
    rows.append({"policy": "logging (on-policy mean)", "ips": mean, "ips_se": se, "dr": mean})
    return pd.DataFrame(rows)


def acceptance_by_arm(logged_rows: pd.DataFrame, predicted: np.ndarray) -> dict[str, float]:
    """Mean predicted against observed acceptance of logged decisions, for the control arm
    ("none": buying anyway) and the offers, each weighted by the inverse propensity (capped
    as in the fit), so each arm's means stand for every decision, not the logged mix.

    Returns:
        `acceptance_{none,offer}_{predicted,observed}` and `acceptance_{none,offer}_rows`
        (an arm without rows has NaN means).
    """
    control = logged_rows["offer_type"].to_numpy(object) == nbo.NONE
    weight = np.minimum(1.0 / logged_rows["propensity"].to_numpy(np.float64), MAX_WEIGHT)
    label = logged_rows[LABEL].to_numpy(np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    out: dict[str, float] = {}
    for arm, rows in (("none", control), ("offer", ~control)):
        total = weight[rows].sum()
        for name, values in (("predicted", predicted), ("observed", label)):
            mean = float((weight[rows] * values[rows]).sum() / total) if total > 0 else np.nan
            out[f"acceptance_{arm}_{name}"] = mean
        out[f"acceptance_{arm}_rows"] = float(rows.sum())
    return out


@dataclass
class PolicyValuation:
    """The served policy and its baselines valued off-policy on a set of logged decisions.

    Attributes:
        decisions: The decisions valued (those whose logged action the action space holds).
        logged_rows: Their logged action's row with its features.
        candidates: Every candidate action of every decision, with its value and the
            columns read after scoring (`CANDIDATE_COLUMNS`), not its features.
        logged: Each decision's logged action (index into the action space).
        p_hat, q_hat: (decisions, actions) acceptance and expected value.
        allowed: (decisions, actions) what the policy may show.
        policies: Policy name → its (decisions, actions) probabilities.
        values: Policy name → its estimated value per decision.
        on_policy: The logging policy's mean reward and its standard error.
        other_scores: Each of the other models asked (`value_policies`' `others`), its
            acceptance of every candidate, in `candidates`' order.
        read_along: The frames of decisions asked to be read along
            (`value_policies`' `read_along`), each with its features.
    """

    decisions: pd.DataFrame
    logged_rows: pd.DataFrame
    candidates: pd.DataFrame
    logged: np.ndarray
    p_hat: np.ndarray
    q_hat: np.ndarray
    allowed: np.ndarray
    policies: dict[str, np.ndarray]
    values: dict[str, PolicyValue]
    on_policy: tuple[float, float]
    other_scores: dict[str, np.ndarray] = field(default_factory=dict)
    read_along: tuple[pd.DataFrame, ...] = ()


def value_policies(
    model: CalibratedModel,
    spec: ModelSpec,
    store: FeatureStore,
    tables: Mapping[str, pa.Table],
    catalogue: nbo.Catalogue,
    actions: pd.DataFrame,
    decisions: pd.DataFrame,
    ranking,
    max_decisions: int = MAX_EVALUATED_DECISIONS,
    others: Mapping[str, Callable[[pd.DataFrame], np.ndarray]] | None = None,
    read_along: Sequence[pd.DataFrame] = (),
) -> PolicyValuation:
    """Score every candidate action of each logged decision and value the served policy,
    the popularity policy (`ranking`) and random offers by IPS, SNIPS and DR, on a uniform
    seeded sample of at most `max_decisions` decisions.

    Args:
        model: The acceptance model.
        spec: The model's declaration.
        store: Feast store for the candidates' point-in-time features.
        tables: Raw tables.
        catalogue: The shop's catalogue.
        actions: The action space (`nbo.action_space` of the model's training window).
        decisions: Logged decisions (`nbo.label_events` rows) with their rewards.
        ranking: Best sellers as of the decisions' start (`offer_policy.best_sellers`).
        max_decisions: At most this many decisions are valued.
        others: Other models (name → rows → acceptance) to score every candidate with, as
            its features are read (the champion the gate compares with): the candidates
            are kept without their features.
        read_along: Other offer decisions whose features to read with the first block's
            (`offer_features` of each, in `PolicyValuation.read_along`): a store scan
            costs about as much whatever the decisions asked, so the monitor's are read
            in the same one.
    """
    test = decisions
    if len(test) > max_decisions:
        # Every candidate of every decision is scored: a uniform sample of decisions keeps
        # that in memory at scale; the estimators' intervals widen accordingly.
        test = test.sample(max_decisions, random_state=SAMPLE_SEED).sort_index()
    test = test.reset_index(drop=True)
    # Decisions whose logged action the action space knows (others cannot be valued: their
    # action is new).
    logged = nbo.logged_actions(test, actions)
    test = test[logged >= 0].reset_index(drop=True)
    logged = logged[logged >= 0]
    test["reference_category"] = nbo.reference_categories(
        tables, catalogue, test["customer_id"], test[EVENT_TIME]
    )
    cand = nbo.candidates(test, actions)
    cand["returned_before"] = returned_before(tables, cand)
    cand["value"] = catalogue.value(cand["category"], cand["discount"].to_numpy())
    n, n_actions = len(test), len(actions)
    # The candidates' features are read and scored a block of whole decisions at a time,
    # and only what is read after scoring is kept: 200,000 decisions' candidates with their
    # features held at once took 11 GiB at a million customers. The logged decisions'
    # features are read with the first block's.
    p_hat = np.empty(len(cand), dtype=np.float64)
    other_scores = {name: np.empty(len(cand), dtype=np.float64) for name in others or {}}
    kept = []
    step = CANDIDATE_DECISIONS * n_actions
    for start in range(0, max(len(cand), 1), step):
        asked = [cand.iloc[start : start + step]]
        if start == 0:
            (logged_rows, block, *along), _ = offer_features_of(
                spec, store, [test, *asked, *read_along]
            )
        else:
            (block,), _ = offer_features_of(spec, store, asked)
        p_hat[start : start + len(block)] = model.predict_proba(block)
        for name in list(other_scores):
            try:
                other_scores[name][start : start + len(block)] = others[name](block)
            except Exception as error:  # it is left unscored, and said so
                log.warning("%s could not score the candidates: %s", name, error)
                del other_scores[name]
        kept.append(block[[c for c in CANDIDATE_COLUMNS if c in block.columns]])
        del block
    cand = kept[0] if len(kept) == 1 else pd.concat(kept, ignore_index=True)
    del kept
    p_hat = p_hat.reshape(n, n_actions)
    values = cand["value"].to_numpy().reshape(n, n_actions)
    q_hat = p_hat * values
    allowed = offer_policy.allowed_actions(cand, n, n_actions)
    offer = (cand["offer_type"].to_numpy() != nbo.NONE).reshape(n, n_actions)
    policies = {
        # The served policy itself: the service answers `offer_policy.ranked_offers`, whose
        # first choice this is.
        "model": offer_policy.choose(q_hat, allowed, ~offer),
        "popularity": offer_policy.popularity_policy(cand, allowed, ranking, n, n_actions),
        "random": uniform(allowed & offer),
    }
    reward = test["reward"].to_numpy(np.float64)
    propensity = test["propensity"].to_numpy(np.float64)
    valued = {
        name: evaluate_policy(policy, logged, propensity, reward, q_hat)
        for name, policy in policies.items()
    }
    on_policy = (float(reward.mean()), float(reward.std(ddof=1) / np.sqrt(max(n, 1))))
    return PolicyValuation(
        test,
        logged_rows,
        cand,
        logged,
        p_hat,
        q_hat,
        allowed,
        policies,
        valued,
        on_policy,
        other_scores,
        tuple(along),
    )


def train_policy(
    spec: ModelSpec,
    store: FeatureStore,
    settings: Settings,
    options: TrainOptions | None = None,
) -> TrainResult:
    """Train the next-best-offer acceptance model and value its policy off-policy.

    Args:
        spec: The model (`models.next_best_offer.SPEC`).
        store: The Feast store to read point-in-time features from.
        settings: Data folder and the rest of the configuration.
        options: Tables, tracking store, registration and test window of the run.

    Returns:
        Metrics (acceptance and policy values), the baseline's (popularity policy), the
        test candidates with each policy's choice in `scores`, and the model.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    spec, options, tables = run_inputs(spec, settings, options)
    catalogue = nbo.Catalogue.of(tables)
    events = nbo.label_events(dict(tables))
    events = sample_entities(events, ["customer_id"], spec.max_events).reset_index(drop=True)
    split = time_split(events, spec.split, EVENT_TIME, LABEL_KNOWN)
    train_idx, valid_idx, test_idx = (w.index for w in split.windows())
    actions = nbo.action_space(events.loc[train_idx], catalogue)
    n_actions = len(actions)

    test = events.loc[test_idx]
    clock = time.perf_counter()
    logged_frame, features = offer_features(spec, store, events.drop(index=test_idx))
    seconds["retrieval"] = time.perf_counter() - clock
    seconds["features"] = time.perf_counter() - started
    # The logging policy shows each customer's favourite category most: weighting each
    # decision by 1 / propensity (capped) learns acceptance as if actions had been chosen
    # uniformly, so the model is right about the actions it would choose, not only about
    # those the logging policy chose.
    logged_frame["weight"] = np.minimum(1.0 / logged_frame["propensity"], MAX_WEIGHT)
    train_rows = logged_frame.loc[logged_frame["offer_id"].isin(events.loc[train_idx, "offer_id"])]
    valid_rows = logged_frame.loc[logged_frame["offer_id"].isin(events.loc[valid_idx, "offer_id"])]

    clock = time.perf_counter()
    layout = layout_from_train(train_rows, features, list(spec.categorical))
    fitted = fit_lightgbm(
        train_rows,
        valid_rows,
        layout,
        LABEL,
        spec.params,
        spec.num_boost_round,
        spec.early_stopping_rounds,
        weight="weight",
    )
    seconds["fit"] = time.perf_counter() - clock
    raw_valid = fitted.raw_score(valid_rows)
    # Calibrated under the same weights as the fit: probabilities then hold for every
    # candidate action, which the policy compares, not only for the logged mix of actions.
    choice = choose_calibrator(
        raw_valid,
        valid_rows[LABEL].to_numpy(),
        methods=("isotonic", "platt", "identity"),
        criterion=spec.calibration_criterion,
        weight=valid_rows["weight"].to_numpy(),
    )
    # The control arm and the offers each calibrated on their own rows (same weights): the
    # shared map alone leaves "buying anyway" off by as much as an offer's effect, and the
    # policy shows an offer only when it beats that.
    arm_feature, control_value = nbo.CALIBRATION_ARM
    control_code = layout.codes[arm_feature].get(control_value, np.nan)
    control_valid = layout.column(arm_feature, valid_rows[arm_feature]) == control_code
    arms = choose_arm_calibration(
        raw_valid,
        valid_rows[LABEL].to_numpy(),
        control_valid,
        arm_feature,
        control_value,
        weight=valid_rows["weight"].to_numpy(),
        methods=("isotonic", "platt", "identity"),
        criterion=spec.calibration_criterion,
    )
    words = {**feature_words(store, store.get_feature_service(spec.feature_service)), **spec.words}
    model = CalibratedModel(
        spec.name,
        fitted.booster,
        fitted.best_iteration,
        layout,
        choice.calibrator,
        words,
        arms.calibration,
    )

    clock = time.perf_counter()
    ranking = offer_policy.best_sellers(tables, split.validation.start)
    # The champion the gate compares with scores the candidates as their features are read.
    others = None
    if options.register:
        others = champion_scorer(spec.name, options.tracking_uri or settings.tracking_uri)
    valuation = value_policies(
        model,
        spec,
        store,
        tables,
        catalogue,
        actions,
        test,
        ranking,
        others=others,
    )
    test, cand, logged_test = valuation.decisions, valuation.candidates, valuation.logged_rows
    logged, valued, on_policy = valuation.logged, valuation.values, valuation.on_policy
    policies, p_hat, q_hat, allowed = (
        valuation.policies,
        valuation.p_hat,
        valuation.q_hat,
        valuation.allowed,
    )
    n = len(test)
    predicted_test = model.predict_proba(logged_test)
    acceptance = binary_metrics(logged_test[LABEL].to_numpy(), predicted_test, spec.capacity)
    seconds["evaluate"] = time.perf_counter() - clock

    metrics = {**acceptance, **acceptance_by_arm(logged_test, predicted_test)}
    for name, value in valued.items():
        metrics |= value.as_metrics(f"policy_{name}")
    metrics["policy_value_dr"] = valued["model"].dr
    # The primary figure with its interval under the same names (`<metric>_low`, `_high`).
    metrics["policy_value_dr_low"] = metrics["policy_model_dr_low"]
    metrics["policy_value_dr_high"] = metrics["policy_model_dr_high"]
    metrics["policy_logging_mean"] = on_policy[0]
    metrics["policy_logging_mean_se"] = on_policy[1]
    chosen = policies["model"].argmax(axis=1)
    none_index = n_actions - 1
    uplift = q_hat[np.arange(n), chosen] - q_hat[:, none_index]
    discounted = cand["discount"].to_numpy().reshape(n, n_actions)[np.arange(n), chosen] > 0
    buy_anyway = p_hat[:, none_index] >= np.quantile(p_hat[:, none_index], BUY_ANYWAY_QUANTILE)
    logged_discount = test["discount"].to_numpy() > 0
    metrics |= {
        "model_uplift_mean": float(uplift.mean()),
        "model_shows_nothing_share": float((chosen == none_index).mean()),
        "model_discount_share": float(discounted.mean()),
        "model_discount_share_buy_anyway": float(discounted[buy_anyway].mean()),
        "logging_discount_share_buy_anyway": float(logged_discount[buy_anyway].mean()),
        "model_returned_category_share": float((~allowed[np.arange(n), chosen]).mean()),
    }
    baseline_metrics = {"policy_value_dr": valued["popularity"].dr}
    log.info(
        "%s test: DR value %.3f (popularity %.3f, random %.3f, logging %.3f) per decision",
        spec.name,
        valued["model"].dr,
        valued["popularity"].dr,
        valued["random"].dr,
        on_policy[0],
    )

    scores = cand[list(SCORED_COLUMNS)].copy()
    scores["allowed"] = allowed.ravel()
    scores["p_hat"] = p_hat.ravel()
    for name, policy in policies.items():
        scores[f"{name}_policy"] = policy.ravel()
    scores["logged"] = False
    scores.loc[np.arange(n) * n_actions + logged, "logged"] = True

    versions = data_version(
        {name: tables[name] for name in spec.raw_tables},
        feature_files(store, store.get_feature_service(spec.feature_service)),
    )
    result = TrainResult(
        name=spec.name,
        primary_metric="policy_value_dr",
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        validation_metrics=binary_metrics(
            valid_rows[LABEL].to_numpy(), model.predict_proba(valid_rows), spec.capacity
        ),
        calibration={
            "method": choice.calibrator.method,
            "losses": choice.losses,
            "arms": arms.calibration.describe(),
            "arm_fallbacks": arms.fallbacks,
        },
        data_version=versions["data_version"],
        features=features,
        split=split.summary(),
        scores=scores,
        model=model,
        seconds=seconds,
    )
    if options.register:
        result = _log_and_register(
            spec,
            result,
            settings,
            options.tracking_uri,
            fitted,
            logged_test,
            valid_rows,
            cand,
            test,
            logged,
            actions,
            catalogue,
            _policy_table(valued, on_policy),
            options.explain_rows,
            versions,
            valuation.other_scores,
        )
    seconds["total"] = time.perf_counter() - started
    log.info("%s: trained in %.1f s (%s)", spec.name, seconds["total"], seconds)
    return result


def _log_and_register(
    spec: ModelSpec,
    result: TrainResult,
    settings: Settings,
    tracking_uri: str | None,
    fitted,
    logged_test: pd.DataFrame,
    valid_rows: pd.DataFrame,
    cand: pd.DataFrame,
    test: pd.DataFrame,
    logged: np.ndarray,
    actions: pd.DataFrame,
    catalogue: nbo.Catalogue,
    policy_table: pd.DataFrame,
    explain_rows: int,
    versions: dict[str, str],
    champion_scores: Mapping[str, np.ndarray],
) -> TrainResult:
    model = result.model
    n, n_actions = len(test), len(actions)
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        explained = write_explanations(
            fitted.booster,
            model.layout,
            logged_test,
            model.words,
            out / "explain",
            num_iteration=fitted.best_iteration,
            rows=explain_rows,
        )
        policy_table.to_csv(out / "policy_values.csv", index=False)
        policy = nbo.Policy(actions, catalogue).to_dict()
        (out / "policy.json").write_text(json.dumps(policy, indent=2))
        reliability = out / "reliability.png"
        y_test = logged_test[LABEL].to_numpy()
        reliability_plot(
            y_test,
            model.predict_proba(logged_test),
            model.raw_score(logged_test),
            title=f"{spec.name} acceptance, test window",
        ).savefig(reliability, dpi=110)
        files = {
            "evaluation": [out / "policy_values.csv", reliability],
            "policy": [out / "policy.json"],
            "explain": list(explained.values()),
        }
        metrics = {f"test_{k}": v for k, v in result.metrics.items()}
        metrics |= {f"test_baseline_{k}": v for k, v in result.baseline_metrics.items()}
        metrics |= {f"validation_{k}": v for k, v in result.validation_metrics.items()}
        metrics["best_iteration"] = float(model.best_iteration)
        reward = test["reward"].to_numpy(np.float64)
        propensity = test["propensity"].to_numpy(np.float64)
        values = cand["value"].to_numpy().reshape(n, n_actions)
        allowed = offer_policy.allowed_actions(cand, n, n_actions)
        none = (cand["offer_type"].to_numpy() == nbo.NONE).reshape(n, n_actions)

        def champion_value(scores: np.ndarray) -> float:
            # The champion's own policy and outcome model, on the same decisions.
            q = np.asarray(scores, dtype=np.float64).reshape(n, n_actions) * values
            target = offer_policy.choose(q, allowed, none)
            return evaluate_policy(target, logged, propensity, reward, q).dr

        record = RunRecord(
            spec=spec,
            result=result,
            params={
                **{f"lgbm_{k}": v for k, v in fitted.params.items()},
                "calibration": result.calibration["method"],
                "calibration_control": result.calibration["arms"]["control_method"],
                "calibration_offers": result.calibration["arms"]["treated_method"],
                "actions": n_actions,
            },
            metrics=metrics,
            files=files,
            words=model.words,
            digests=versions,
            input_example=logged_test,
            signature_rows=(valid_rows, logged_test),
            promotion=PromotionRule(
                cand,
                capacity=spec.capacity,
                champion_metric=champion_value,
                champion_scores=champion_scores,
            ),
        )
        result = log_and_register(record, settings, out, tracking_uri)
    result.seconds["log"] = time.perf_counter() - clock
    return result
