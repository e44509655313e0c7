"""The binary-classifier trainer: one call trains, evaluates, explains, logs and registers.

    label events (raw tables) → point-in-time features (Feast) → decision-time features →
    time split → LightGBM (on the Dask cluster when `AFTERSALE_DASK_ADDRESS` is set, whose
    workers then retrieve the training window's features, each its share) →
    calibration → test metrics beside the baseline, per segment →
    SHAP explanations → MLflow run → registry version, `challenger`, maybe `champion`

What varies between models is declared in a `models.spec.ModelSpec` (see `models/`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from aftersale.cluster import dask_client
from aftersale.settings import Settings
from features.instants import utc_times
from models.served.classifier import BaselineStart, CalibratedModel
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, ModelSpec
from training.calibrate import choose_calibrator
from training.data import (
    decision_features,
    decisions,
    feature_files,
    retrieved_frame,
    run_inputs,
    training_data,
)
from training.evaluate import binary_metrics, flatten_segments, reliability_plot, segment_metrics
from training.explain import write_explanations
from training.fit import FitResult, fit_lightgbm, layout_from_train
from training.fit_cluster import fit_lightgbm_on_cluster, fit_retrieving_on_cluster
from training.record import PromotionRule, RunRecord, log_and_register
from training.register import read_version
from training.split import SplitError, TimeSplit, time_split
from training.trainer import TrainOptions, TrainResult

log = logging.getLogger(__name__)

SEGMENT_METRICS = ("rows", "positive_rate", "roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")


def train(
    spec: ModelSpec,
    store: FeatureStore,
    settings: Settings,
    options: TrainOptions | None = None,
) -> TrainResult:
    """Train, evaluate, explain, log and register one binary classifier.

    Args:
        spec: The model (see `models.MODELS`).
        store: The Feast store to read point-in-time features from.
        settings: Data folder and the rest of the configuration.
        options: Tables, tracking store, registration and test window of the run.

    Returns:
        Metrics, scores, the model and where it was logged.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    spec, options, tables = run_inputs(spec, settings, options)
    # On a cluster the workers retrieve the training window's features, each its share, and
    # fit on them where they are (`training.fit_cluster.fit_retrieving_on_cluster`); a
    # refit, which learns from every row on one machine, retrieves them all here.
    apart = bool(settings.dask_address) and not options.refit
    if apart:
        events = decisions(spec, tables)
        service = store.get_feature_service(spec.feature_service)
        versions = read_version(spec.tables, tables, feature_files(store, service))
        del tables
        split = time_split(events, spec.split, EVENT_TIME, LABEL_KNOWN)
        train_rows = events.loc[split.train.index]
        # Trees that start from the baseline are fitted here: a window with that few
        # labels is small, and the workers fit from the mean.
        apart = starting_offset(spec, train_rows[LABEL]) is None
        # Here: the windows that stop and score the fit, and for reports over every
        # labelled row, the rows that purging left out of every window.
        here = split.validation.index.append(split.test.index)
        if spec.reports is not None:
            here = here.append(events.index.difference(split.train.index.append(here)))
        if not apart:
            here = here.append(split.train.index)
        near = decision_features(spec, store, events.loc[here])
        del events
        valid_rows, test_rows = (near.frame.loc[w.index] for w in (split.validation, split.test))
        purged_rows = near.frame.drop(index=split.validation.index.append(split.test.index))
        features, words = near.features, near.words
        seconds["features"] = time.perf_counter() - started
        seconds["retrieval"] = near.retrieval_s
        refit_rows = frame = None
        if not apart:
            train_rows = near.frame.loc[split.train.index]
            frame = near.frame if spec.reports is not None else None
        del near
    else:
        data = training_data(spec, store, tables)
        frame, features, words = data.frame, data.features, data.words
        seconds["features"] = time.perf_counter() - started
        seconds["retrieval"] = data.retrieval_s
        # The raw tables are done with once labelled: their digests now, and nothing of
        # them held through the fit (a million customers' shipments and scans are 1.9 GiB).
        versions = read_version(spec.tables, tables, data.feature_files)
        del tables, data

        split = time_split(frame, spec.split, EVENT_TIME, LABEL_KNOWN)
        train_rows, valid_rows, test_rows = (frame.loc[w.index] for w in split.windows())
        # A refit learns from every labelled decision; otherwise only a model's reports
        # read them all, and the windows hold the rest.
        refit_rows = frame if options.refit else None
        if spec.reports is None:
            frame = None
    for window, rows in zip(split.windows(), (train_rows, valid_rows, test_rows), strict=True):
        # One class cannot be learned, calibrated or ranked (e.g. churn where no customer
        # ever orders twice): say so rather than report NaN.
        if rows[LABEL].nunique() < 2:
            raise SplitError(
                f"{spec.name}: every label in the {window.name} window is "
                f"{rows[LABEL].iloc[0]} ({window.rows} rows); these data cannot train it"
            )

    clock = time.perf_counter()
    if apart:
        fitted, choice, raw_valid, kept = fit_calibrated_apart(
            spec, settings, store, train_rows, valid_rows, features
        )
        if spec.reports is not None:
            frame = report_rows(kept, valid_rows, test_rows, purged_rows)
        del kept, purged_rows
    else:
        fitted, choice, raw_valid = fit_calibrated(spec, settings, train_rows, valid_rows, features)
    model = CalibratedModel(
        spec.name,
        fitted.booster,
        fitted.best_iteration,
        fitted.layout,
        choice.calibrator,
        words,
        offset=fitted.offset,
    )
    seconds["fit"] = time.perf_counter() - clock

    clock = time.perf_counter()
    y_test = test_rows[LABEL].to_numpy()
    # One pass of the trees per window: the model's score is the calibrated raw score.
    raw_test = fitted.raw_score(test_rows)
    score = choice.calibrator(raw_test)
    baseline = np.asarray(spec.baseline(test_rows), dtype=np.float64)
    metrics = binary_metrics(y_test, score, spec.capacity)
    raw_metrics = binary_metrics(y_test, raw_test, spec.capacity)
    baseline_metrics = binary_metrics(
        y_test, baseline, spec.capacity, probabilities=spec.baseline_is_probability
    )
    validation_metrics = binary_metrics(
        valid_rows[LABEL].to_numpy(), choice.calibrator(raw_valid), spec.capacity
    )
    scores = test_rows[[*spec.entity, EVENT_TIME, LABEL]].copy()
    scores["score"] = score
    scores["baseline"] = baseline
    for column in spec.segments:
        if column not in scores:
            scores[column] = test_rows[column]
    segments = segment_metrics(
        scores,
        list(spec.segments),
        {"model": "score", "baseline": "baseline"},
        capacity=spec.capacity,
        probabilities={"baseline": spec.baseline_is_probability},
    )
    seconds["evaluate"] = time.perf_counter() - clock
    log.info(
        "%s test: %s %.4f (baseline %.4f), brier %.4f, ece %.4f on %d rows",
        spec.name,
        spec.primary_metric,
        metrics[spec.primary_metric],
        baseline_metrics[spec.primary_metric],
        metrics["brier"],
        metrics["ece"],
        len(test_rows),
    )

    calibration = {"method": choice.calibrator.method, "losses": choice.losses}
    served_fit = fitted
    if refit_rows is not None:
        clock = time.perf_counter()
        served_fit = refit(
            spec, refit_rows, test_rows, features, fitted.best_iteration, fitted.offset
        )
        model = CalibratedModel(
            spec.name,
            served_fit.booster,
            served_fit.best_iteration,
            served_fit.layout,
            choice.calibrator,
            words,
            offset=served_fit.offset,
        )
        seconds["refit"] = time.perf_counter() - clock
    summary = split.summary() | served_span(split, valid_rows, refit_rows)
    del refit_rows
    result = TrainResult(
        name=spec.name,
        primary_metric=spec.primary_metric,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        validation_metrics=validation_metrics,
        calibration=calibration,
        data_version=versions["data_version"],
        features=features,
        split=summary,
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
        # The served model is explained, on the test rows.
        explained = write_explanations(
            served_fit.booster,
            model.layout,
            test_rows,
            words,
            out / "explain",
            num_iteration=served_fit.best_iteration,
            rows=options.explain_rows,
            contributions_of=model.contributions,
        )
        seconds["explain"] = time.perf_counter() - clock
        clock = time.perf_counter()
        files = _reports(spec, segments, scores, frame, test_rows, out)
        files["explain"] = list(explained.values())
        reliability = out / "reliability.png"
        reliability_plot(y_test, score, raw_test, title=f"{spec.name}, test window").savefig(
            reliability, dpi=110
        )
        files["evaluation"].append(reliability)
        metrics = {f"test_{k}": v for k, v in result.metrics.items()}
        metrics |= {f"test_baseline_{k}": v for k, v in result.baseline_metrics.items()}
        metrics |= {f"test_uncalibrated_{k}": v for k, v in raw_metrics.items()}
        metrics |= {f"validation_{k}": v for k, v in result.validation_metrics.items()}
        metrics |= {f"calibration_{k}": v for k, v in result.calibration["losses"].items()}
        metrics |= flatten_segments(segments, "test_segment", SEGMENT_METRICS)
        metrics["best_iteration"] = float(fitted.best_iteration)
        metrics["served_best_iteration"] = float(model.best_iteration)
        record = RunRecord(
            spec=spec,
            result=result,
            params={
                **{f"lgbm_{k}": v for k, v in fitted.params.items()},
                "num_boost_round": spec.num_boost_round,
                "early_stopping_rounds": spec.early_stopping_rounds,
                "calibration": choice.calibrator.method,
                "calibration_criterion": spec.calibration_criterion,
                "capacity": spec.capacity,
                "refit": options.refit,
                "gate_margin": options.gate_margin,
            },
            metrics=metrics,
            files=files,
            words=words,
            digests=versions,
            input_example=test_rows,
            signature_rows=(valid_rows, test_rows),
            promotion=PromotionRule(
                test_rows,
                y_test,
                spec.capacity,
                challenger_scores=score,
                margin=options.gate_margin,
            ),
            version_tags={
                "test_window": f"{split.test.start.isoformat()}/{split.test.end.isoformat()}"
            },
        )
        result = log_and_register(record, settings, out, options.tracking_uri)
        seconds["log"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started
    log.info("%s: trained in %.1f s (%s)", spec.name, seconds["total"], seconds)
    return result


def fit_calibrated(
    spec: ModelSpec,
    settings: Settings,
    train_rows: pd.DataFrame,
    valid_rows: pd.DataFrame,
    features: list[str],
):
    """LightGBM fitted on `train_rows`, stopped early on `valid_rows` and calibrated on them
    by the spec's criterion.

    Returns:
        The fit (with its feature layout), the calibration chosen, and the validation rows'
        raw scores.
    """
    layout, params = _layout_and_params(spec, train_rows, features)
    fit_args = (
        train_rows,
        valid_rows,
        layout,
        LABEL,
        params,
        spec.num_boost_round,
        spec.early_stopping_rounds,
    )
    offset = starting_offset(spec, train_rows[LABEL])
    if offset is not None:
        # A window with few labels (the offset's rule): one machine fits it.
        fitted = fit_lightgbm(*fit_args, offset=offset)
    elif settings.dask_address:
        with dask_client(settings.dask_address) as client:
            fitted = fit_lightgbm_on_cluster(client, *fit_args)
    else:
        fitted = fit_lightgbm(*fit_args)
    choice, raw_valid = _calibrated(spec, fitted, valid_rows)
    return fitted, choice, raw_valid


def fit_calibrated_apart(
    spec: ModelSpec,
    settings: Settings,
    store: FeatureStore,
    train_events: pd.DataFrame,
    valid_rows: pd.DataFrame,
    features: list[str],
):
    """`fit_calibrated` on the cluster `settings` names, from the training window's label
    events: each worker retrieves the features of its share of them and fits on it
    (`fit_retrieving_on_cluster`).

    Returns:
        The fit, the calibration chosen, the validation rows' raw scores, and the columns of
        the training window's rows that the spec's reports read (`spec.report_columns`;
        every column where it names none; none without reports).
    """
    params = dict(spec.params)
    if spec.params_rule is not None:
        params |= spec.params_rule(train_events[LABEL])
    kept: list[str] | None = []
    if spec.reports is not None:
        kept = list(spec.report_columns) or None
    with dask_client(settings.dask_address) as client:
        fitted, kept_rows = fit_retrieving_on_cluster(
            client,
            partial(retrieved_frame, spec, store.config),
            train_events,
            valid_rows,
            features,
            list(spec.categorical),
            LABEL,
            params,
            spec.num_boost_round,
            spec.early_stopping_rounds,
            kept_columns=kept,
        )
    choice, raw_valid = _calibrated(spec, fitted, valid_rows)
    return fitted, choice, raw_valid, kept_rows


def report_rows(kept: pd.DataFrame, *windows: pd.DataFrame) -> pd.DataFrame:
    """Every labelled row as a spec's reports read it: the training window's columns that
    came back from the workers (`fit_calibrated_apart`), then the same columns of the other
    rows (the validation and test windows, and the rows purged from every window)."""
    columns = list(kept.columns)
    return pd.concat([kept, *(w[columns] for w in windows)], ignore_index=True)


def _calibrated(spec: ModelSpec, fitted: FitResult, valid_rows: pd.DataFrame):
    """The calibration the spec's criterion chooses on the validation rows, and their raw
    scores."""
    raw_valid = fitted.raw_score(valid_rows)
    choice = choose_calibrator(
        raw_valid,
        valid_rows[LABEL].to_numpy(),
        criterion=spec.calibration_criterion,
        min_isotonic_rows=spec.min_isotonic_rows,
    )
    return choice, raw_valid


def refit(
    spec: ModelSpec,
    rows: pd.DataFrame,
    test_rows: pd.DataFrame,
    features: list[str],
    trees: int,
    offset=None,
) -> FitResult:
    """The recipe fitted on every labelled decision, `rows` (the time split's windows
    together), with the number of trees the time split's model stopped at and from the
    start it stopped from (`offset`: the baseline whose log-odds it started from, or None):
    nothing is left to stop on. `test_rows` only report the fit's loss."""
    layout, params = _layout_and_params(spec, rows, features)
    return fit_lightgbm(
        rows,
        test_rows,
        layout,
        LABEL,
        params,
        trees,
        early_stopping_rounds=0,
        offset=offset,
    )


def starting_offset(spec: ModelSpec, labels: pd.Series) -> BaselineStart | None:
    """The baseline whose log-odds the trees start from, where the spec's `offset_rule`
    asks it of a window with these labels (a row without any trailing rate starts from the
    window's own rate); else None (the trees start from the mean)."""
    if spec.offset_rule is not None and spec.offset_rule(labels):
        return BaselineStart(spec.name, float(labels.mean()))
    return None


def _layout_and_params(spec: ModelSpec, rows: pd.DataFrame, features: list[str]):
    """The feature layout of the rows a fit learns from, and its LightGBM parameters (the
    spec's, with its rule applied to those rows' labels)."""
    layout = layout_from_train(rows, features, list(spec.categorical))
    params = dict(spec.params)
    if spec.params_rule is not None:
        params |= spec.params_rule(rows[LABEL])
    return layout, params


def served_span(
    split: TimeSplit, valid_rows: pd.DataFrame, refit_rows: pd.DataFrame | None
) -> dict[str, str | int]:
    """What the served model has seen: the decisions its trees learned from
    (`served_train_start`..`served_train_end`, the training window's bounds) and the last one
    it saw at all, stopping and calibration included (`served_seen_end`, an instant it
    holds). A decision after that is new to it."""
    if refit_rows is None:
        start, end, rows = split.train.start, split.train.end, split.train.rows
        seen = utc_times(valid_rows[EVENT_TIME]).max()
    else:
        times = utc_times(refit_rows[EVENT_TIME])
        start, end, rows = times.min(), times.max(), len(refit_rows)
        seen = end
    return {
        "served_train_start": start.isoformat(),
        "served_train_end": end.isoformat(),
        "served_train_rows": rows,
        "served_seen_end": seen.isoformat(),
    }


def _reports(
    spec: ModelSpec,
    segments: pd.DataFrame,
    scores: pd.DataFrame,
    frame: pd.DataFrame,
    test_rows: pd.DataFrame,
    out: Path,
) -> dict[str, list[Path]]:
    """Write the evaluation tables a run keeps: segment metrics and the model's reports."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[Path]] = {"evaluation": [out / "segment_metrics.csv"]}
    segments.to_csv(out / "segment_metrics.csv", index=False)
    if spec.reports is not None:
        scored = test_rows.assign(score=scores["score"].to_numpy())
        for name, table in spec.reports(frame, scored).items():
            path = out / f"{name}.csv"
            table.to_csv(path, index=False)
            paths["evaluation"].append(path)
    return paths
