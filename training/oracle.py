"""The simulator's oracle: the best achievable score on a run's own test rows.

Simulated data come with their true probabilities (`_truth/`, which models never read); a
benchmark or the demo holds each model against them on the rows it was tested on. Nothing
a deployment imports reads `_truth/`: this module is evaluation only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from models import churn, delay_risk
from models import delivery_estimate as de
from models import next_best_offer as nbo
from models import outreach_uplift as ou
from models.served.window import local_dates
from models.spec import EVENT_TIME, LABEL
from training.delivery import KINDS, measure
from training.trainer import TrainResult
from training.uplift_metrics import bootstrap_intervals, uplift_metrics


@dataclass(frozen=True)
class OracleComparison:
    """Model, baseline and oracle measured with one metric on the same test rows."""

    rows: int
    model: float
    baseline: float
    oracle: float


# (the run's result, the simulator's `_truth/` folder) → the comparison
OracleFunction = Callable[[TrainResult, Path], OracleComparison]


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


def churn_truth(scores: pd.DataFrame, truth_dir: Path) -> pd.DataFrame:
    """Test snapshots with the simulator's true churn probability, 1 − p_repurchase_90d."""
    truth = pd.read_parquet(truth_dir / "customer_snapshots.parquet")
    truth["snapshot_ts"] = pd.to_datetime(truth["snapshot_ts"], utc=True)
    joined = scores.merge(
        truth,
        left_on=["customer_id", EVENT_TIME],
        right_on=["customer_id", "snapshot_ts"],
        how="inner",
    )
    return joined.assign(oracle=1.0 - joined["p_repurchase_90d"])


def delay_truth(scores: pd.DataFrame, truth_dir: Path) -> pd.DataFrame:
    """Dispatch rows of the test window with the simulator's true late probability.

    `p_late` is the probability at dispatch; after a scan the truth would also have to
    condition on the scans, so later decisions have no oracle and are left out.
    """
    truth = pd.read_parquet(truth_dir / "shipments.parquet", columns=["shipment_id", "p_late"])
    rows = scores[scores["stage"] == "dispatch"]
    joined = rows.merge(truth, on="shipment_id", how="inner")
    return joined.assign(oracle=joined["p_late"])


def true_accept(candidate_frame: pd.DataFrame, truth_dir: Path) -> np.ndarray:
    """The simulator's true probability that each candidate would be accepted.

    Uses the customer's latent traits (`_truth/customer_latent.parquet`), whether the parcel
    was late at the decision and whether the customer returned the category before it.
    """
    from features.sources.simulator import true_accept_prob

    latent = pd.read_parquet(truth_dir / "customer_latent.parquet")
    latent = latent.set_index("customer_id").reindex(candidate_frame["customer_id"].to_numpy())
    offer_type = candidate_frame["offer_type"].to_numpy(object)
    p = true_accept_prob(
        {c: latent[c].to_numpy() for c in latent.columns},
        candidate_frame["category"].to_numpy(object).astype(str),
        offer_type.astype(str),
        candidate_frame["discount"].to_numpy(np.float64),
        candidate_frame["parcel_late"].to_numpy(np.float64) > 0,
        candidate_frame["returned_before"].to_numpy(bool),
    )
    return p


def policy_oracle(result: TrainResult, truth_dir: Path) -> OracleComparison:
    """True value per decision of the model's policy, the popularity policy and the best
    allowed action (the oracle), from the simulator's acceptance mechanism."""
    scores = result.scores
    n = int(scores["decision"].max()) + 1
    a = len(scores) // n
    true_q = true_accept(scores, truth_dir) * scores["value"].to_numpy()
    true_q = np.nan_to_num(true_q.reshape(n, a), nan=-np.inf)
    allowed = scores["allowed"].to_numpy().reshape(n, a)
    best = np.where(allowed, true_q, -np.inf).max(axis=1)
    finite = np.where(np.isfinite(true_q), true_q, 0.0)

    def value_of(column: str) -> float:
        return float((scores[column].to_numpy().reshape(n, a) * finite).sum(axis=1).mean())

    return OracleComparison(
        rows=n,
        model=value_of("model_policy"),
        baseline=value_of("popularity_policy"),
        oracle=float(best.mean()),
    )


def acceptance_by_arm(scores: pd.DataFrame, truth_dir: Path) -> pd.DataFrame:
    """Predicted against the simulator's true mean acceptance, for the control arm (the
    "none" candidate of every test decision: buying anyway) and for the offers (every offer
    candidate of every test decision).

    Returns:
        One row per arm ("none", "offers"): candidates, predicted mean, true mean and their
        difference (candidates without a truth, an unknown category, left out).
    """
    true_p = true_accept(scores, truth_dir)
    control = scores["offer_type"].to_numpy(object) == nbo.NONE
    known = np.isfinite(true_p)
    rows = []
    for arm, rows_of_arm in (("none", control), ("offers", ~control)):
        chosen = rows_of_arm & known
        predicted = float(scores["p_hat"].to_numpy(np.float64)[chosen].mean())
        true = float(true_p[chosen].mean())
        rows.append(
            {
                "arm": arm,
                "candidates": int(chosen.sum()),
                "predicted": predicted,
                "true": true,
                "difference": predicted - true,
            }
        )
    return pd.DataFrame(rows)


def truth_rows(
    scores: pd.DataFrame, truth_dir: Path, coverage: float = de.COVERAGE
) -> pd.DataFrame:
    """Dispatch rows of the test window with the simulator's best estimate and window.

    Transit hours are lognormal(mu, sigma) at dispatch, so the median instant is dispatch +
    e^mu hours and the central window e^(mu ± z·sigma); after a scan the truth would have to
    condition on the scans, so later decisions have no oracle and are left out.
    """
    truth = pd.read_parquet(
        truth_dir / "shipments.parquet",
        columns=["shipment_id", "transit_log_mu", "transit_log_sigma"],
    )
    rows = scores[scores["stage"] == "dispatch"].merge(truth, on="shipment_id", how="inner")
    start = pd.to_datetime(pd.Series(rows[EVENT_TIME].to_numpy()), utc=True)
    zones = rows[de.TIMEZONE].reset_index(drop=True)
    z = norm.ppf((1.0 + coverage) / 2.0)
    mu, sigma = rows["transit_log_mu"].to_numpy(), rows["transit_log_sigma"].to_numpy()
    for kind, log_h in (
        ("most_likely", mu),
        ("earliest", mu - z * sigma),
        ("latest", mu + z * sigma),
    ):
        rows[f"oracle_{kind}_date"] = local_dates(
            start + pd.to_timedelta(np.exp(log_h), unit="h"), zones
        )
    return rows


def delivery_oracle(result: TrainResult, truth_dir: Path) -> OracleComparison:
    """MAE in days of the model, the promise and the simulator's truth on dispatch rows."""
    rows = truth_rows(result.scores, truth_dir, float(de.SPEC.options["coverage"]))
    actual = rows["actual_date"].to_numpy()
    mae = {
        s: measure(actual, {k: rows[f"{s}_{k}_date"].to_numpy() for k in KINDS})["mae_days"]
        for s in ("model", "promise", "oracle")
    }
    return OracleComparison(len(rows), mae["model"], mae["promise"], mae["oracle"])


TRUE_EFFECT = "effect_repurchase_90d"
# Rankings of the outreach rows compared at the same capacity: column of the scored test
# rows → how it ranks (the oracle's is the simulator's true effect).
UPLIFT_RANKINGS = {
    "model": "score",
    "todays_ranking": "baseline",
    "random": "random",
    "oracle": TRUE_EFFECT,
}
# A ranking learned from the true effects themselves on the model's own features (present
# only where a benchmark fitted it): the most any learner reading these features can reach.
FEATURE_CEILING = ("feature_ceiling", "ceiling")


def _rankings(rows: pd.DataFrame) -> dict[str, str]:
    """The rankings the rows carry a column for."""
    out = dict(UPLIFT_RANKINGS)
    if FEATURE_CEILING[1] in rows:
        out[FEATURE_CEILING[0]] = FEATURE_CEILING[1]
    return out


def uplift_truth(scores: pd.DataFrame, truth_dir: Path) -> pd.DataFrame:
    """Test outreach rows with each row's true individual effect on the 90-day repurchase."""
    truth = pd.read_parquet(truth_dir / "outreach.parquet", columns=["outreach_id", TRUE_EFFECT])
    return scores.merge(truth, on="outreach_id", how="inner")


def uplift_feature_ceiling(prepared, truth_dir: Path) -> pd.DataFrame:
    """Effects of the test rows from a model fitted to the true effects of the training rows
    (stopped on the validation rows), on the features the uplift model reads.

    No learner sees true effects, only outcomes of sent and held-out rows; one fitted to the
    effects themselves shows how much of the oracle's ranking these features can express.

    Args:
        prepared: The uplift model's rows (`training.uplift.UpliftRows`).
        truth_dir: The simulation's `_truth/` folder.

    Returns:
        outreach_id and `ceiling` of each test row.
    """
    from training.fit import fit_lightgbm
    from training.uplift import REGRESSION

    truth = pd.read_parquet(truth_dir / "outreach.parquet", columns=["outreach_id", TRUE_EFFECT])
    train, valid = (
        frame.merge(truth, on="outreach_id", how="inner")
        for frame in (prepared.train, prepared.valid)
    )
    spec = prepared.spec
    fitted = fit_lightgbm(
        train,
        valid,
        prepared.layout,
        TRUE_EFFECT,
        {**spec.params, **REGRESSION},
        spec.num_boost_round,
        spec.early_stopping_rounds,
    )
    test = prepared.test
    return pd.DataFrame(
        {"outreach_id": test["outreach_id"].to_numpy(), "ceiling": fitted.raw_score(test)}
    )


def uplift_selections(rows: pd.DataFrame, capacity: float) -> pd.DataFrame:
    """What each ranking's capacity-limited selection truly achieves.

    Each ranking takes its top `capacity` share of the rows by priority, its effect ×
    customer value − the channel's cost (random targeting: at random; an action worth less
    than its cost is never taken, as in the queue).

    Returns:
        One row per ranking: selected, true incremental repurchases, true incremental
        margin (effect × value − cost), share of selected actions whose true effect is
        negative, and the rank correlation of the ranking with the true effects.
    """
    from scipy.stats import spearmanr

    k = int(np.ceil(capacity * len(rows)))
    effect = rows[TRUE_EFFECT].to_numpy(np.float64)
    value = rows["value"].to_numpy(np.float64)
    cost = rows["cost"].to_numpy(np.float64)
    out = []
    for name, column in _rankings(rows).items():
        score = rows[column].to_numpy(np.float64)
        if name == "random":
            priority, allowed = score, np.ones(len(rows), dtype=bool)
        else:
            priority = score * value - cost
            allowed = np.isfinite(priority) & (priority > 0)
        order = np.flatnonzero(allowed)[np.argsort(-priority[allowed], kind="stable")][:k]
        finite = np.isfinite(score)
        rho = spearmanr(score[finite], effect[finite])[0] if finite.sum() > 2 else np.nan
        out.append(
            {
                "ranking": name,
                "selected": len(order),
                "incremental_repurchases": float(effect[order].sum()),
                "incremental_margin": float((effect[order] * value[order] - cost[order]).sum()),
                "negative_share": float((effect[order] < 0).mean()) if len(order) else np.nan,
                "spearman": float(rho),
            }
        )
    return pd.DataFrame(out)


def uplift_qini(rows: pd.DataFrame, capacity: float, resamples: int = 200) -> pd.DataFrame:
    """Qini, AUUC and uplift at capacity of each ranking on the observed outcomes, with
    bootstrap intervals and each one's Qini as a share of the oracle's."""
    scores = {name: rows[column].to_numpy(np.float64) for name, column in _rankings(rows).items()}
    return bootstrap_intervals(
        scores,
        rows[LABEL].to_numpy(),
        rows[ou.TREATED].to_numpy(bool),
        rows["_weight"].to_numpy(),
        capacity,
        resamples=resamples,
        ratio_to="oracle",
    )


def uplift_oracle(result: TrainResult, truth_dir: Path) -> OracleComparison:
    """Qini of the model, today's ranking and the true effects on the same test rows."""
    rows = uplift_truth(result.scores, truth_dir)
    y = rows[LABEL].to_numpy()
    treated = rows[ou.TREATED].to_numpy(bool)
    weight = rows["_weight"].to_numpy()

    def qini(column: str) -> float:
        return uplift_metrics(rows[column].to_numpy(), y, treated, weight)["qini"]

    return OracleComparison(len(rows), qini("score"), qini("baseline"), qini(TRUE_EFFECT))


ORACLES: dict[str, OracleFunction] = {
    churn.NAME: auc_oracle(churn_truth),
    delay_risk.NAME: auc_oracle(delay_truth),
    nbo.NAME: policy_oracle,
    de.NAME: delivery_oracle,
    ou.NAME: uplift_oracle,
}
