"""Training benchmark: delay risk and churn beside their baselines and the simulator's oracle.

Targets (issue 4): test AUC within 0.01 of the oracle's and ECE ≤ 0.02 on the default
simulated data; the models trained in at most 3 minutes on it.

The oracle is the simulator's true probability (`_truth/`), scored on the same test rows:
delay risk at dispatch rows (`p_late` is the probability at dispatch; after a scan the
truth would need the scan too), churn at every monthly snapshot (1 − `p_repurchase_90d`).

Run: `uv run python -m benchmarks training --customers 20000`; it reuses `<out>/sim-<N>`
when present, else simulates it (seed 7).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from training.evaluate import expected_calibration_error, paired_auc_difference
from training.oracle import auc

log = logging.getLogger(__name__)

SEED = 7
# A segment's AUC is printed only with this many oracle rows.
SEGMENT_ROWS = 200


def offer_figures(result, truth_dir: Path) -> dict[str, float]:
    """Next-best offer: estimated (DR, with its 95% interval) and true value per decision of
    the model's policy beside the popularity, random and logging policies and the oracle."""
    from training.oracle import acceptance_by_arm
    from training.oracle import policy_oracle as oracle

    metrics = result.metrics
    truth = oracle(result, truth_dir)
    print("  next_best_offer: value per decision (margin less discounts), test window")
    print(f"  {'policy':<12} {'DR':>7} {'95% interval':>17} {'IPS':>7} {'SNIPS':>7} {'true':>7}")
    true_values = {"model": truth.model, "popularity": truth.baseline}
    for name in ("model", "popularity", "random"):
        dr = metrics[f"policy_{name}_dr"]
        low, high = metrics[f"policy_{name}_dr_low"], metrics[f"policy_{name}_dr_high"]
        true = true_values.get(name, float("nan"))
        print(
            f"  {name:<12} {dr:>7.3f} {f'[{low:.3f}, {high:.3f}]':>17} "
            f"{metrics[f'policy_{name}_ips']:>7.3f} {metrics[f'policy_{name}_snips']:>7.3f} "
            f"{true:>7.3f}"
        )
    print(f"  {'logging':<12} {metrics['policy_logging_mean']:>7.3f} (on-policy mean reward)")
    print(f"  {'oracle':<12} {'':>7} {'':>17} {'':>7} {'':>7} {truth.oracle:>7.3f}")
    by_arm = acceptance_by_arm(result.scores, truth_dir)
    print("  acceptance by arm, every candidate of the test decisions: predicted and true mean")
    print(f"  {'arm':<12} {'candidates':>10} {'predicted':>9} {'true':>7} {'diff':>7}")
    for arm in by_arm.itertuples(index=False):
        print(
            f"  {arm.arm:<12} {arm.candidates:>10,} {arm.predicted:>9.3f} {arm.true:>7.3f} "
            f"{arm.difference:>+7.3f}"
        )
    observed = [
        (arm, metrics.get(f"acceptance_{arm}_predicted"), metrics.get(f"acceptance_{arm}_observed"))
        for arm in ("none", "offer")
    ]
    if all(p is not None for _, p, _ in observed):
        print(
            "  logged test decisions (IPS-weighted), predicted / observed: "
            + ", ".join(f"{arm} {p:.3f} / {o:.3f}" for arm, p, o in observed)
        )
    figures = {
        **{f"acceptance_{a.arm}_predicted": a.predicted for a in by_arm.itertuples()},
        **{f"acceptance_{a.arm}_true": a.true for a in by_arm.itertuples()},
        "model_dr": metrics["policy_model_dr"],
        "popularity_dr": metrics["policy_popularity_dr"],
        "model_true": truth.model,
        "popularity_true": truth.baseline,
        "oracle_true": truth.oracle,
        "model_over_oracle": truth.model / truth.oracle,
        "model_over_popularity": truth.model / truth.baseline,
        "model_over_popularity_dr": metrics["policy_model_dr"] / metrics["policy_popularity_dr"],
        "discount_share_buy_anyway": metrics["model_discount_share_buy_anyway"],
        "logging_discount_share_buy_anyway": metrics["logging_discount_share_buy_anyway"],
        "decisions": float(truth.rows),
    }
    print(
        f"  true value: model / oracle = {figures['model_over_oracle']:.2f} (target ≥ 0.90), "
        f"model / popularity = {figures['model_over_popularity']:.2f} (target ≥ 1.5; "
        f"by DR {figures['model_over_popularity_dr']:.2f}); {truth.rows:,} decisions"
    )
    print(
        "  discounts to likely buy-anyway customers (top quartile of predicted no-offer "
        f"purchase): model {figures['discount_share_buy_anyway']:.1%}, logging policy "
        f"{figures['logging_discount_share_buy_anyway']:.1%}"
    )
    return figures


def simulation(customers: int, out: Path) -> Path:
    """The seeded simulation of `customers` (`<out>/sim-<N>`), simulated when absent."""
    from features.sources.simulator import simulate

    sim = out / f"sim-{customers}"
    if not (sim / "_truth").is_dir():
        started = time.perf_counter()
        simulate(sim, customers=customers, seed=SEED)
        print(f"  {customers:,} customers simulated in {time.perf_counter() - started:.1f} s")
    return sim


def simulated_store(customers: int, out: Path, purpose: str):
    """The seeded simulation of `customers` (`<out>/sim-<N>`, reused when present), validated,
    with its features built the production way into a fresh `<out>/<purpose>-<N>` and
    applied to Feast; prints how long each took.

    Returns:
        The simulation folder, the data folder's settings, the raw tables and the store.
    """
    from aftersale.settings import Settings
    from features.build.parallel import publish_features
    from features.contract.validate import load_folder
    from features.store.config import feature_store
    from features.store.sync import apply_definitions

    sim = simulation(customers, out)
    data_dir = out / f"{purpose}-{customers}"
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = Settings(data_dir=data_dir)
    started = time.perf_counter()
    tables, report = load_folder(sim)
    if not report.ok:
        raise ValueError(f"{sim} breaks the contract: {report.violations[:5]}")
    # The production build: chunked, in worker processes at scale.
    publish_features(sim, settings.features_dir, settings.feature_workers)
    store = feature_store(settings)
    apply_definitions(store)
    print(f"  features built, published and applied in {time.perf_counter() - started:.1f} s")
    return sim, settings, tables, store


def bench_training(
    customers: int,
    out: Path,
    models: tuple[str, ...] = ("delay_risk", "churn", "next_best_offer", "delivery_estimate"),
) -> dict[str, dict[str, float]]:
    """Simulate (or reuse), build features, train the models and compare with the oracle.

    Args:
        customers: Simulated customers.
        out: Benchmark output folder; the simulation is `<out>/sim-<customers>` and the
            data folder (feature store, MLflow) `<out>/training-<customers>`, recreated.
        models: Which models of `models.MODELS` to train.

    Returns:
        Figures per model (also printed).
    """
    from models import MODELS, churn, delay_risk
    from training.oracle import churn_truth, delay_truth
    from training.trainer import TrainOptions
    from training.trainers import train_model

    truth_scores = {delay_risk.NAME: delay_truth, churn.NAME: churn_truth}

    print(f"\n## training --customers {customers:,}")
    sim, settings, tables, store = simulated_store(customers, out, "training")

    figures: dict[str, dict[str, float]] = {}
    header = (
        f"  {'model':<11} {'rows':>8} {'AUC':>7} {'base':>7} {'oracle':>7} {'gap':>7} "
        f"{'ECE':>6} {'o.ECE':>6} {'all AUC':>8} {'train s':>8} {'fit s':>6} {'feat s':>7}"
    )
    lines: list[str] = []
    segment_lines: list[str] = []
    total = time.perf_counter()
    for name in models:
        started = time.perf_counter()
        result = train_model(MODELS[name], store, settings, TrainOptions(tables=tables))
        wall = time.perf_counter() - started
        if name not in truth_scores:
            print(f"  {name}: trained in {wall:.1f} s ({_stages(result.seconds)})")
            figures[name] = {"seconds": wall}
            if name == "next_best_offer":
                figures[name] |= offer_figures(result, sim / "_truth")
            else:
                print("  (quality figures: `python -m benchmarks delivery`)")
            continue
        rows = truth_scores[name](result.scores, sim / "_truth")
        y = rows["label"].to_numpy()
        fig = {
            "rows": float(len(rows)),
            "auc": auc(y, rows["score"].to_numpy()),
            "baseline_auc": auc(y, rows["baseline"].to_numpy()),
            "oracle_auc": auc(y, rows["oracle"].to_numpy()),
            "ece": expected_calibration_error(y, rows["score"].to_numpy()),
            "oracle_ece": expected_calibration_error(y, rows["oracle"].to_numpy()),
            "test_auc_all_rows": result.metrics["roc_auc"],
            "test_ece_all_rows": result.metrics["ece"],
            "seconds": wall,
            "fit_seconds": result.seconds.get("fit", float("nan")),
            "feature_seconds": result.seconds.get("features", float("nan")),
            "version": float(result.version or 0),
        }
        figures[name] = fig
        for segment in MODELS[name].segments:
            for value, part in rows.groupby(rows[segment].astype("string").fillna("(none)")):
                if len(part) < SEGMENT_ROWS or part["label"].nunique() < 2:
                    continue
                y_part = part["label"].to_numpy()
                by = {k: auc(y_part, part[k].to_numpy()) for k in ("score", "baseline", "oracle")}
                for k, v in by.items():
                    fig[f"{segment}={value}_{k}_auc"] = v
                segment_lines.append(
                    f"  {name:<11} {segment}={value:<22} {len(part):>7,} {by['score']:>7.4f} "
                    f"{by['baseline']:>7.4f} {by['oracle']:>7.4f}"
                )
        lines.append(
            f"  {name:<11} {len(rows):>8,} {fig['auc']:>7.4f} {fig['baseline_auc']:>7.4f} "
            f"{fig['oracle_auc']:>7.4f} {fig['oracle_auc'] - fig['auc']:>7.4f} "
            f"{fig['ece']:>6.4f} {fig['oracle_ece']:>6.4f} {fig['test_auc_all_rows']:>8.4f} "
            f"{wall:>8.1f} {fig['fit_seconds']:>6.1f} {fig['feature_seconds']:>7.1f}"
        )
    print(header)
    print("\n".join(lines))
    if segment_lines:
        print(f"  by segment (at least {SEGMENT_ROWS} oracle rows): rows, AUC, base, oracle")
        print("\n".join(segment_lines))
    print(
        "  AUC/base/oracle/ECE on the oracle's rows (delay risk: dispatch rows of the test "
        "window); 'all AUC': every test row; targets: gap ≤ 0.01, ECE ≤ 0.02"
    )
    print(
        f"  trained {len(models)} models in {time.perf_counter() - total:.1f} s "
        "(target: all models on the default 20,000 customers in ≤ 180 s)"
    )
    return figures


def _stages(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())


# The state-level late rate's test AUC on a 70/30 time split of the Olist sample, as the
# training issue states it.
OLIST_REFERENCE_BASELINE_AUC = 0.63


def bench_olist(customers: int, out: Path) -> dict[str, float]:
    """Delay risk on the real Olist sample beside the state-level late-rate baseline.

    The sample is mapped by the adapter, validated, its features built into
    `<out>/olist-training` (recreated), and delay risk trained with the latest 30% of
    decisions as the test window. `customers` is not used (the sample has its own size).

    Returns:
        Test rows, the model's and the baseline's test AUC (also printed).
    """
    from aftersale.settings import Settings
    from features.build.tables import build_feature_tables, publish_tables
    from features.contract.validate import load_folder
    from features.datasets import OLIST_TEST_FRACTION
    from features.sources.olist import OlistSource, default_olist_path
    from features.store.config import feature_store
    from features.store.sync import apply_definitions
    from models import MODELS, delay_risk
    from training.trainer import TrainOptions
    from training.trainers import train_model

    del customers
    print("\n## olist (real data: delay risk beside the state late rate)")
    source = default_olist_path()
    if not source.is_file():
        print(f"  skipped: Olist sample not found at {source}")
        return {}
    data_dir = out / "olist-training"
    shutil.rmtree(data_dir, ignore_errors=True)
    raw = data_dir / "source"
    raw.mkdir(parents=True)
    OlistSource(source).write(raw)
    tables, report = load_folder(raw)
    if not report.ok:
        raise ValueError(f"the Olist mapping breaks the contract: {report.violations[:5]}")
    settings = Settings(data_dir=data_dir)
    publish_tables(build_feature_tables(tables), settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    options = TrainOptions(tables=tables, test_fraction=OLIST_TEST_FRACTION)
    result = train_model(MODELS[delay_risk.NAME], store, settings, options)
    y = result.scores["label"].to_numpy()
    difference, low, high = paired_auc_difference(
        y, result.scores["score"].to_numpy(), result.scores["baseline"].to_numpy()
    )
    fig = {
        "rows": float(len(y)),
        "positive_rate": float(y.mean()),
        "auc": auc(y, result.scores["score"].to_numpy()),
        "baseline_auc": auc(y, result.scores["baseline"].to_numpy()),
        "difference": difference,
        "difference_low": low,
        "difference_high": high,
    }
    split = result.split
    print(
        f"  split by dispatch time: train {split['split_train_rows']:,} rows "
        f"(purged {split['split_train_purged']}), validation {split['split_validation_rows']:,} "
        f"(purged {split['split_validation_purged']}), test {split['split_test_rows']:,} from "
        f"{split['split_test_start'][:10]} (latest {OLIST_TEST_FRACTION:.0%})"
    )
    print(f"  {'model':<11} {'rows':>6} {'late':>6} {'AUC':>7} {'state':>7} {'ref.':>6}")
    print(
        f"  {result.name:<11} {len(y):>6,} {fig['positive_rate']:>6.1%} {fig['auc']:>7.4f} "
        f"{fig['baseline_auc']:>7.4f} {OLIST_REFERENCE_BASELINE_AUC:>6.2f}"
    )
    print(
        "  'state': the baseline on the same test rows (destination state's trailing 90-day "
        "late rate: the origin is unknown); 'ref.': the issue's figure for a state late rate; "
        "target: AUC above 'state'"
    )
    print(
        f"  model − state: {difference:+.4f} AUC, 95% paired bootstrap interval "
        f"[{low:+.4f}, {high:+.4f}] (1,000 resamples of the test rows)"
    )
    test_start = pd.Timestamp(split["split_test_start"])
    folds = cross_validate(MODELS[delay_risk.NAME], store, tables, test_start)
    print(f"  time-ordered CV before the test window ({len(folds)} expanding folds)")
    print(f"  {'fold from':<11} {'rows':>6} {'late':>6} {'AUC':>7} {'state':>7} {'diff':>7}")
    for fold in folds:
        print(
            f"  {fold['start']:<11} {fold['rows']:>6,.0f} {fold['positive_rate']:>6.1%} "
            f"{fold['auc']:>7.4f} {fold['baseline_auc']:>7.4f} "
            f"{fold['auc'] - fold['baseline_auc']:>+7.4f}"
        )
    mean_difference = float(np.mean([f["auc"] - f["baseline_auc"] for f in folds]))
    print(f"  mean difference over the folds {mean_difference:+.4f}")
    fig["cv_mean_difference"] = mean_difference
    return fig


def cross_validate(spec, store, tables, test_start: pd.Timestamp) -> list[dict]:
    """The model's and its baseline's AUC on expanding-window folds before the test window,
    fitted as training fits it (the model's parameters and tree-size rule, early stopping
    on the latest rows of each fold's past, from the baseline where its rule says so); the
    test window is never read."""
    from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN
    from training.binary import starting_offset
    from training.data import training_data
    from training.fit import fit_lightgbm, layout_from_train
    from training.split import expanding_folds

    data = training_data(spec, store, tables)
    frame = data.frame
    out = []
    for fold in expanding_folds(
        frame, test_start, time_col=EVENT_TIME, label_known_col=LABEL_KNOWN
    ):
        train, valid, scored = (
            frame.loc[fold.train],
            frame.loc[fold.validation],
            frame.loc[fold.test],
        )
        layout = layout_from_train(train, data.features, list(spec.categorical))
        params = dict(spec.params)
        if spec.params_rule is not None:
            params |= spec.params_rule(train[LABEL])
        fitted = fit_lightgbm(
            train,
            valid,
            layout,
            LABEL,
            params,
            spec.num_boost_round,
            spec.early_stopping_rounds,
            offset=starting_offset(spec, train[LABEL]),
        )
        y = scored[LABEL].to_numpy()
        out.append(
            {
                "start": fold.start.strftime("%Y-%m-%d"),
                "rows": float(len(y)),
                "positive_rate": float(y.mean()),
                "auc": auc(y, fitted.raw_score(scored)),
                "baseline_auc": auc(y, np.asarray(spec.baseline(scored), dtype=np.float64)),
            }
        )
    return out
