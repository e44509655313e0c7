"""Uplift benchmark: the outreach uplift model against the simulator's true effects, and the
project's learners on a real randomised e-mail test.

1. Simulated default business (seed 7, `<out>/sim-<N>` reused): `outreach_uplift` trained as
   in production; on its test rows the Qini of the model, today's ranking, random targeting
   and the oracle (the true effects), with bootstrap intervals; what each capacity-limited
   selection truly adds; one model per action against the pooled model; training seconds.
   Targets: model Qini ≥ 0.8 × the oracle's; true incremental repurchases of the model's
   selection ≥ 2 × today's ranking's and ≥ 3 × random's; ≤ 5% of the model's selected
   actions with a negative true effect; trained in ≤ 120 s at 20,000 customers.
2. Hillstrom's e-mail test (64,000 customers, e-mail or none at random): a seeded 70/30 split
   by row, an 80/20 split inside the 70% for early stopping and for choosing the learner by
   validation Qini; on the 30% the chosen learner, every learner, a response model (the
   outcome, treatment ignored) and random targeting. Targets: for visits, the uplift among
   the top 30% ≥ 1.2 × the average effect; the chosen learner's Qini above the response
   model's and random's.

Run: `python -m benchmarks uplift --customers 20000`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

# Hillstrom: the seed of the test and validation splits, the shares held out, the share
# targeted for the uplift among the top, and the actions' single name.
HILLSTROM_SEED = 20080301
HILLSTROM_TEST_SHARE = 0.3
HILLSTROM_VALID_SHARE = 0.2
HILLSTROM_TOP_SHARE = 0.3
HILLSTROM_ACTION = "email"
HILLSTROM_FEATURES = ("recency", "history", "mens", "womens", "zip_code", "newbie", "channel")
HILLSTROM_CATEGORICAL = ("zip_code", "channel")
HILLSTROM_CONTROL = "No E-Mail"
HILLSTROM_OUTCOMES = ("visit", "conversion")


def hillstrom_path() -> Path:
    """The Hillstrom CSV beside the project (`../shared/data/hillstrom_email/`)."""
    root = Path(__file__).resolve().parents[1]
    return root.parent / "shared" / "data" / "hillstrom_email" / "hillstrom.csv"


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def _interval_table(intervals: pd.DataFrame, metrics: tuple[str, ...]) -> list[str]:
    """One line per ranking: each metric with its interval."""
    lines = []
    for ranking, part in intervals.groupby("ranking", sort=False):
        by_metric = part.set_index("metric")
        cells = [
            f"{by_metric.at[m, 'value']:>9.5f} [{by_metric.at[m, 'low']:>8.5f}, "
            f"{by_metric.at[m, 'high']:>8.5f}]"
            for m in metrics
        ]
        lines.append(f"  {ranking:<16} " + " ".join(cells))
    return lines


def bench_uplift(customers: int, out: Path) -> dict[str, float]:
    """The simulated business's uplift figures, then Hillstrom's.

    Args:
        customers: Simulated customers.
        out: Benchmark output folder: the simulation is `<out>/sim-<customers>`, the data
            folder `<out>/uplift-<customers>` (recreated), Hillstrom's test rows
            `<out>/uplift_hillstrom_<outcome>.parquet`.

    Returns:
        The figures (also printed), Hillstrom's prefixed `hillstrom_<outcome>_`.
    """
    figures = bench_simulated(customers, out)
    print("\n## uplift: Hillstrom e-mail test (real data)")
    for name, value in bench_hillstrom(out).items():
        figures[f"hillstrom_{name}"] = value
    return figures


def bench_simulated(customers: int, out: Path) -> dict[str, float]:
    """Train `outreach_uplift` on the simulated business and hold it against the truth.

    Returns:
        Qini figures, selection ratios, negative shares, the per-action comparison and the
        training seconds (also printed).
    """
    from benchmarks.training import simulated_store
    from models import MODELS
    from models import outreach_uplift as ou
    from training.oracle import (
        uplift_feature_ceiling,
        uplift_qini,
        uplift_selections,
        uplift_truth,
    )
    from training.trainer import TrainOptions
    from training.trainers import train_model
    from training.uplift import prepare_rows

    spec = MODELS[ou.NAME]
    print(f"\n## uplift --customers {customers:,}")
    sim, settings, tables, store = simulated_store(customers, out, "uplift")

    options = TrainOptions(tables=tables)
    started = time.perf_counter()
    result = train_model(spec, store, settings, options)
    train_seconds = time.perf_counter() - started
    learner = str(result.calibration["learner"])
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"  trained in {train_seconds:.1f} s, learner {learner} ({stages})")

    prepared = prepare_rows(spec, store, settings, options)
    print("  each action's effect in the training window (sent less held-out repurchase rate)")
    print(f"  {'action':<24} {'sent':>6} {'held':>6} {'effect':>8} {'s.e.':>7} {'z':>6}")
    for action, effect in arm_effects(prepared.train).iterrows():
        print(
            f"  {action:<24} {int(effect['sent']):>6,} {int(effect['held_out']):>6,} "
            f"{effect['effect']:>+8.4f} {effect['se']:>7.4f} {effect['z']:>+6.2f}"
        )
    rows = uplift_truth(result.scores, sim / "_truth").merge(
        uplift_feature_ceiling(prepared, sim / "_truth"), on="outreach_id", how="left"
    )
    capacity = spec.capacity
    resamples = int(spec.options.get("bootstrap", 200))
    intervals = uplift_qini(rows, capacity, resamples=resamples)
    print(f"  test rows {len(rows):,} (sent {int(rows[ou.TREATED].sum()):,}); 90% intervals")
    print(f"  {'ranking':<16} {'Qini':>30} {'uplift at ' + f'{capacity:.0%}':>30}")
    print("\n".join(_interval_table(intervals, ("qini", "uplift_at_capacity"))))
    ratio = intervals[(intervals["ranking"] == "model") & (intervals["metric"] == "qini_ratio")]
    share_of_oracle = float(ratio["value"].iloc[0])
    print(
        f"  model Qini / oracle Qini = {share_of_oracle:.2f} "
        f"[{ratio['low'].iloc[0]:.2f}, {ratio['high'].iloc[0]:.2f}] "
        f"(target ≥ 0.80: {_verdict(share_of_oracle >= 0.8)})"
    )

    selections = uplift_selections(rows, capacity).set_index("ranking")
    print(f"  selections at capacity {capacity:.0%} (true effects)")
    print(f"  {'ranking':<16} {'selected':>8} {'incr.':>8} {'margin':>9} {'neg.':>6} {'rho':>6}")
    for name, row in selections.iterrows():
        print(
            f"  {name:<16} {int(row['selected']):>8,} {row['incremental_repurchases']:>8.1f} "
            f"{row['incremental_margin']:>9.1f} {row['negative_share']:>6.1%} "
            f"{row['spearman']:>6.3f}"
        )
    incremental = selections["incremental_repurchases"]
    over_today = float(incremental["model"] / incremental["todays_ranking"])
    over_random = float(incremental["model"] / incremental["random"])
    negative = float(selections.at["model", "negative_share"])
    negative_today = float(selections.at["todays_ranking", "negative_share"])
    print(
        f"  incremental repurchases: model / today = {over_today:.2f} "
        f"(target ≥ 2: {_verdict(over_today >= 2)}), model / random = {over_random:.2f} "
        f"(target ≥ 3: {_verdict(over_random >= 3)})"
    )
    # What ranking by the true effects itself reaches: no learner can do better on these rows.
    ceiling_today = float(incremental["oracle"] / incremental["todays_ranking"])
    ceiling_random = float(incremental["oracle"] / incremental["random"])
    print(
        f"  the oracle's selection reaches {ceiling_today:.2f} × today's and "
        f"{ceiling_random:.2f} × random's: the most any learner can reach on these rows"
    )
    print(
        f"  selected with a negative true effect: model {negative:.1%} "
        f"(target ≤ 5%: {_verdict(negative <= 0.05)}), today's ranking {negative_today:.1%}"
    )

    ceiling = ratio_of(intervals, "feature_ceiling")
    ceiling_over_today = float(incremental["feature_ceiling"] / incremental["todays_ranking"])
    print(
        f"  a model fitted to the true effects themselves, on the same features, reaches "
        f"{ceiling:.2f} of the oracle's Qini and {ceiling_over_today:.2f} × today's "
        f"incremental repurchases, with "
        f"{selections.at['feature_ceiling', 'negative_share']:.1%} of its selection negative: "
        f"about the most a learner reading these features can reach"
    )
    per_action = per_action_comparison(spec, prepared, result.scores, learner)
    print(
        f"  one {learner} per action vs the pooled model (action as an input), "
        f"{per_action['rows']:,.0f} test rows: Qini {per_action['per_action_qini']:.5f} vs "
        f"{per_action['pooled_qini']:.5f}; fitted in {per_action['per_action_seconds']:.1f} s"
    )
    for action, qini in per_action["by_action"].items():
        print(f"    {action:<24} per-action {qini[0]:>9.5f}  pooled {qini[1]:>9.5f}")
    print(
        f"  training seconds {train_seconds:.1f} (target ≤ 120 s: {_verdict(train_seconds <= 120)})"
    )
    by_name = intervals.set_index(["ranking", "metric"])["value"]
    figures = {
        "test_rows": float(len(rows)),
        "model_qini": float(by_name["model", "qini"]),
        "baseline_qini": float(by_name["todays_ranking", "qini"]),
        "random_qini": float(by_name["random", "qini"]),
        "oracle_qini": float(by_name["oracle", "qini"]),
        "model_over_oracle": share_of_oracle,
        "model_over_today_incremental": over_today,
        "model_over_random_incremental": over_random,
        "oracle_over_today_incremental": ceiling_today,
        "oracle_over_random_incremental": ceiling_random,
        "feature_ceiling_over_oracle": ceiling,
        "feature_ceiling_over_today_incremental": ceiling_over_today,
        "model_negative_share": negative,
        "today_negative_share": negative_today,
        "per_action_qini": per_action["per_action_qini"],
        "pooled_qini": per_action["pooled_qini"],
        "train_seconds": train_seconds,
    }
    return figures


def ratio_of(intervals: pd.DataFrame, ranking: str) -> float:
    """A ranking's Qini as a share of the oracle's."""
    found = intervals[(intervals["ranking"] == ranking) & (intervals["metric"] == "qini_ratio")]
    return float(found["value"].iloc[0])


def arm_effects(rows: pd.DataFrame) -> pd.DataFrame:
    """Per action: sent and held-out rows, the difference of their outcome rates, its
    standard error and z."""
    from models.outreach_uplift import ACTION, TREATED
    from models.spec import LABEL

    out = {}
    for action, part in rows.groupby(ACTION, sort=True):
        t = part[TREATED].to_numpy(bool)
        y = part[LABEL].to_numpy(np.float64)
        if not t.any() or t.all():
            continue
        effect = y[t].mean() - y[~t].mean()
        se = float(np.sqrt(y[t].var(ddof=1) / t.sum() + y[~t].var(ddof=1) / (~t).sum()))
        out[str(action)] = {
            "sent": int(t.sum()),
            "held_out": int((~t).sum()),
            "effect": float(effect),
            "se": se,
            "z": float(effect / se) if se > 0 else np.nan,
        }
    return pd.DataFrame.from_dict(out, orient="index")


def per_action_comparison(spec, prepared, scores: pd.DataFrame, learner: str):
    """Refit `learner` on each action's training rows alone and compare the test Qini of the
    combined per-action scores with the pooled model's on the same rows.

    Returns:
        rows, per_action_qini, pooled_qini, per_action_seconds and by_action (action →
        (per-action Qini, pooled Qini) on its own test rows).
    """
    from models.outreach_uplift import ACTION, TREATED
    from models.spec import LABEL
    from training.uplift import WEIGHT, learn
    from training.uplift_metrics import uplift_metrics

    test = prepared.test.merge(
        scores[["outreach_id", "score"]].rename(columns={"score": "pooled"}), on="outreach_id"
    )
    test["per_action"] = np.nan
    started = time.perf_counter()
    for action in prepared.learned:
        train = prepared.train[prepared.train[ACTION] == action]
        valid = prepared.valid[prepared.valid[ACTION] == action]
        if valid[TREATED].nunique() < 2 or valid[LABEL].nunique() < 2:
            continue
        model = learn(learner, train, valid, prepared.layout, spec, prepared.share, {}, (action,))
        mask = (test[ACTION] == action).to_numpy()
        test.loc[mask, "per_action"] = model.predict(test[mask])
    seconds = time.perf_counter() - started

    def qini(rows: pd.DataFrame, column: str) -> float:
        return uplift_metrics(
            rows[column].to_numpy(np.float64),
            rows[LABEL].to_numpy(),
            rows[TREATED].to_numpy(bool),
            rows[WEIGHT].to_numpy(),
            spec.capacity,
        )["qini"]

    by_action = {
        str(action): (qini(part, "per_action"), qini(part, "pooled"))
        for action, part in test.groupby(ACTION, sort=True)
    }
    return {
        "rows": float(len(test)),
        "per_action_qini": qini(test, "per_action"),
        "pooled_qini": qini(test, "pooled"),
        "per_action_seconds": seconds,
        "by_action": by_action,
    }


def hillstrom_rows(path: Path, limit: int | None = None) -> pd.DataFrame:
    """Hillstrom's rows as the learners read them: the features, `action`, `treated`, the
    outcomes, `row` (the 0-based data row of the CSV), and the id and time columns the
    cross-fitting learners group and order by."""
    from models.outreach_uplift import ACTION, TREATED
    from models.spec import EVENT_TIME

    frame = pd.read_csv(path, nrows=limit)
    frame["row"] = np.arange(len(frame))
    frame[TREATED] = frame["segment"] != HILLSTROM_CONTROL
    frame[ACTION] = HILLSTROM_ACTION
    frame["customer_id"] = frame["row"].astype(str)
    # One experiment, one instant: the learners' ordering by time keeps the shuffled order.
    frame[EVENT_TIME] = pd.Timestamp("2008-03-01", tz="UTC")
    for name in HILLSTROM_CATEGORICAL:
        frame[name] = frame[name].astype(str)
    return frame


def hillstrom_split(rows: int, seed: int = HILLSTROM_SEED) -> dict[str, np.ndarray]:
    """Seeded positions of the training, validation and test rows (70/30, then 80/20)."""
    order = np.random.default_rng(seed).permutation(rows)
    test_count = round(rows * HILLSTROM_TEST_SHARE)
    test, rest = order[:test_count], order[test_count:]
    valid_count = round(len(rest) * HILLSTROM_VALID_SHARE)
    return {"train": rest[valid_count:], "valid": rest[:valid_count], "test": test}


def bench_hillstrom(
    out: Path,
    limit: int | None = None,
    outcomes: tuple[str, ...] = HILLSTROM_OUTCOMES,
    learners: tuple[str, ...] | None = None,
    resamples: int = 200,
) -> dict[str, float]:
    """The project's learners on Hillstrom's e-mail test, beside a response model and
    random targeting, per outcome.

    Args:
        out: Folder of `uplift_hillstrom_<outcome>.parquet` (the chosen learner's test rows:
            row, treatment, outcome, score).
        limit: Read only the first rows of the CSV (None: all).
        outcomes: Outcome columns to learn.
        learners: Learners compared (None: every one of `training.uplift.LEARNERS`).
        resamples: Bootstrap resamples of the test rows.

    Returns:
        Per outcome: the chosen learner's, the response model's and random's Qini and top-30%
        uplift, the average effect and the ratio (also printed); {} when the CSV is absent.
    """
    from models import MODELS
    from models import outreach_uplift as ou
    from models.spec import LABEL
    from training.fit import fit_lightgbm, layout_from_train
    from training.uplift import LEARNERS, WEIGHT, learn
    from training.uplift_metrics import arm_weights, bootstrap_intervals, uplift_metrics

    path = hillstrom_path()
    if not path.is_file():
        print(f"  skipped: Hillstrom data not found at {path}")
        return {}
    spec = MODELS[ou.NAME]
    learners = learners or LEARNERS
    out.mkdir(parents=True, exist_ok=True)
    data = hillstrom_rows(path, limit)
    positions = hillstrom_split(len(data))
    features = [*HILLSTROM_FEATURES, ou.ACTION]
    figures: dict[str, float] = {}
    print(
        f"  {len(data):,} rows: train {len(positions['train']):,}, validation "
        f"{len(positions['valid']):,}, test {len(positions['test']):,} (seed {HILLSTROM_SEED})"
    )
    for outcome in outcomes:
        parts = {}
        for name, where in positions.items():
            part = data.iloc[where].assign(**{LABEL: data[outcome].iloc[where].to_numpy()})
            part[WEIGHT] = arm_weights(part[ou.TREATED].to_numpy())
            parts[name] = part.reset_index(drop=True)
        train, valid, test = parts["train"], parts["valid"], parts["test"]
        layout = layout_from_train(train, features, [*HILLSTROM_CATEGORICAL, ou.ACTION])
        share = {HILLSTROM_ACTION: float(train[ou.TREATED].mean())}

        def measured(rows: pd.DataFrame, score: np.ndarray) -> dict[str, float]:
            return uplift_metrics(
                score,
                rows[LABEL].to_numpy(),
                rows[ou.TREATED].to_numpy(),
                rows[WEIGHT].to_numpy(),
                HILLSTROM_TOP_SHARE,
            )

        started = time.perf_counter()
        test_scores, valid_qini = {}, {}
        for learner in learners:
            model = learn(learner, train, valid, layout, spec, share, {}, (HILLSTROM_ACTION,))
            valid_score = model.predict(valid)
            # A learner that ranks nobody (all predictions equal) is chosen only when all do.
            ranks = bool(np.ptp(valid_score) > 0)
            valid_qini[learner] = (ranks, measured(valid, valid_score)["qini"])
            test_scores[learner] = model.predict(test)
        chosen = max(learners, key=lambda name: valid_qini[name])
        plain = layout_from_train(train, list(HILLSTROM_FEATURES), list(HILLSTROM_CATEGORICAL))
        response = fit_lightgbm(
            train, valid, plain, LABEL, dict(spec.params), spec.num_boost_round,
            spec.early_stopping_rounds,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        rankings = {
            f"chosen:{chosen}": test_scores[chosen],
            **{name: test_scores[name] for name in learners if name != chosen},
            "response": response.raw_score(test),
            "random": np.random.default_rng(HILLSTROM_SEED).random(len(test)),
        }
        intervals = bootstrap_intervals(
            rankings,
            test[LABEL].to_numpy(),
            test[ou.TREATED].to_numpy(),
            test[WEIGHT].to_numpy(),
            HILLSTROM_TOP_SHARE,
            resamples=resamples,
        )
        value = intervals.set_index(["ranking", "metric"])["value"]
        average = float(value[f"chosen:{chosen}", "observed_uplift"])
        top = float(value[f"chosen:{chosen}", "uplift_at_capacity"])
        ratio = top / average if average else float("nan")
        chosen_qini = float(value[f"chosen:{chosen}", "qini"])
        response_qini = float(value["response", "qini"])
        random_qini = float(value["random", "qini"])
        print(
            f"  {outcome}: rate {test[LABEL].mean():.2%}, average effect {average:.4f} on the "
            f"test rows; learners fitted in {seconds:.1f} s; validation Qini "
            + ", ".join(f"{name} {valid_qini[name][1]:.5f}" for name in learners)
        )
        print(
            f"  {'ranking':<16} {'Qini [90% interval]':>30} "
            f"{f'uplift, top {HILLSTROM_TOP_SHARE:.0%}':>30}"
        )
        print("\n".join(_interval_table(intervals, ("qini", "uplift_at_capacity"))))
        target = f"target ≥ 1.2: {_verdict(ratio >= 1.2)}" if outcome == "visit" else "no target"
        print(
            f"  top-{HILLSTROM_TOP_SHARE:.0%} uplift / average effect = {ratio:.2f} ({target}); "
            f"chosen Qini above the response model's: {_verdict(chosen_qini > response_qini)}, "
            f"above random's: {_verdict(chosen_qini > random_qini)}"
        )
        written = out / f"uplift_hillstrom_{outcome}.parquet"
        pd.DataFrame(
            {
                "row": test["row"].to_numpy(np.int64),
                "treatment": test[ou.TREATED].to_numpy(np.int64),
                "outcome": test[LABEL].to_numpy(np.int64),
                "score": test_scores[chosen],
            }
        ).to_parquet(written, index=False)
        print(f"  chosen learner's test rows: {written}")
        figures |= {
            f"{outcome}_chosen_qini": chosen_qini,
            f"{outcome}_response_qini": response_qini,
            f"{outcome}_random_qini": random_qini,
            f"{outcome}_top_uplift": top,
            f"{outcome}_average_effect": average,
            f"{outcome}_top_over_average": ratio,
        }
    return figures
