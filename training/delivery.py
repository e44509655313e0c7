"""The delivery-window trainer: quantile boosters on log hours, a conformal window, dates.

    label events (settled shipments) → point-in-time features (Feast) → time split (the
    validation window halved in time: the first half stops the boosting, the later half
    calibrates the window) → LightGBM quantile boosters at (1 − coverage)/2, 1/2 and
    (1 + coverage)/2 → conformal offsets per group at the level of local calendar days:
    split (fitted once on the calibration half) and adaptive (ACI replayed over the
    calibration and test rows as their outcomes arrive; the model keeps the latest) →
    test measures beside the split window, the shop's promise and the uncalibrated
    quantiles, per segment →
    SHAP on the middle booster → MLflow run → registry version, `champion` when its MAE in
    days beats the champion's on the same test rows

What the model is (label, features, coverage, groups) is declared in
`models.delivery_estimate`; the trained object is `models.served.window.WindowModel`.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from aftersale.settings import Settings
from features.instants import utc_times
from models.delivery_estimate import DELIVERED, PROMISED, SEGMENTS, TIMEZONE
from models.served.window import (
    HOUR_COLUMNS,
    WindowModel,
    anchor_log_hours,
    group_keys,
    local_dates,
)
from models.served.window import PYFUNC_CODE as WINDOW_PYFUNC_CODE
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, ModelSpec
from training.conformal import ADAPTIVE, SPLIT, adaptive_offsets, fit_offsets, window_scores
from training.data import run_inputs, sample_entities, training_data, write_json
from training.evaluate import metric_key
from training.explain import write_explanations
from training.fit import fit_lightgbm, layout_from_train
from training.record import PromotionRule, RunRecord, log_and_register
from training.register import read_version
from training.split import time_split
from training.trainer import TrainOptions, TrainResult
from training.window import outcome_bucket, window_metrics

log = logging.getLogger(__name__)

# The run's artefact (under `data/`) holding where ACI stood after the test window.
ACI_STATE_FILE = "aci_state.json"
# The boosters' target: log hours to the event less the row's anchor.
ABOVE_ANCHOR = "_label_above_anchor"
# The boosters' sample of shipments is drawn apart from the label events' own. The key is
# the one the outer boosters' sample had when only they sampled, so they keep drawing the
# same shipments.
FIT_HASH_KEY = "outer-quantiles0"
WINDOW_METRICS = (
    "rows",
    "mae_days",
    "exact_share",
    "within_1d_share",
    "coverage",
    "median_width_days",
)


def window_dates(
    model: WindowModel,
    rows: pd.DataFrame,
    *,
    raw: bool = False,
    offset: np.ndarray | None = None,
    quantiles: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Local dates of the model's (or the uncalibrated quantiles') estimate and window;
    `offset` gives each row's conformal offset in place of the model's, `quantiles` the
    rows' `raw_log_hours` where already predicted."""
    if raw:
        lower, middle, upper = model.raw_log_hours(rows) if quantiles is None else quantiles
        hours = {"most_likely": middle, "earliest": lower, "latest": upper}
        hours = {k: np.exp(v) for k, v in hours.items()}
    else:
        predicted = model.predict_hours(rows, offset, quantiles)
        hours = {k.removesuffix("_hours"): predicted[k].to_numpy() for k in HOUR_COLUMNS}
    start = pd.Series(pd.to_datetime(rows[EVENT_TIME], utc=True).to_numpy())
    start = pd.to_datetime(start, utc=True)
    zones = rows[TIMEZONE].reset_index(drop=True)
    return {k: local_dates(start + pd.to_timedelta(v, unit="h"), zones) for k, v in hours.items()}


def promise_dates(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The promise as an estimate (its date) and a window (decision day to promised day)."""
    zones = rows[TIMEZONE].reset_index(drop=True)
    promised = local_dates(rows[PROMISED], zones)
    decided = local_dates(rows[EVENT_TIME], zones)
    return {
        "most_likely": promised,
        "earliest": np.minimum(decided, promised),
        "latest": promised,
    }


def measure(actual: np.ndarray, dates: Mapping[str, np.ndarray]) -> dict[str, float]:
    """`training.window.window_metrics` of one scorer's dates."""
    return window_metrics(actual, dates["most_likely"], dates["earliest"], dates["latest"])


def segment_table(scores: pd.DataFrame, scorers: tuple[str, ...]) -> pd.DataFrame:
    """Window measures per value of each segment column, for every scorer."""
    records = []
    for segment in SEGMENTS:
        values = scores[segment].astype("string").fillna("(missing)")
        for value, part in scores.groupby(values, sort=True, observed=True):
            actual = part["actual_date"].to_numpy()
            for scorer in scorers:
                dates = {k: part[f"{scorer}_{k}_date"].to_numpy() for k in KINDS}
                records.append(
                    {"segment": segment, "value": str(value), "scorer": scorer}
                    | measure(actual, dates)
                )
    return pd.DataFrame(records)


KINDS = ("most_likely", "earliest", "latest")


def train_window(
    spec: ModelSpec,
    store: FeatureStore,
    settings: Settings,
    options: TrainOptions | None = None,
) -> TrainResult:
    """Train, calibrate, evaluate, explain, log and register a delivery window.

    Args:
        spec: The model (`models.delivery_estimate.SPEC`): its options hold the stated
            `coverage`, the conformal `group` columns and `settled_after`.
        store: The Feast store (definitions applied, offline tables published).
        settings: Data folder and the rest of the configuration.
        options: Tables, tracking store, registration and test window of the run.

    Returns:
        The run's result: `metrics` of the model and `baseline_metrics` of the promise on
        the same test rows (primary: `mae_days`, lower is better); `scores` one row per test
        decision with the dates of the model, the uncalibrated quantiles and the promise.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    spec, options, tables = run_inputs(spec, settings, options)
    coverage = float(spec.options["coverage"])
    group = tuple(spec.options["group"])
    calibration = str(spec.options.get("calibration", SPLIT))
    if calibration not in (SPLIT, ADAPTIVE):
        raise ValueError(f"calibration must be {SPLIT!r} or {ADAPTIVE!r}, got {calibration!r}")
    data = training_data(spec, store, tables)
    frame, features, words = data.frame, data.features, data.words
    seconds["features"] = time.perf_counter() - started
    # The raw tables are done with once labelled: their digests now, and nothing of them
    # held through the fits.
    versions = read_version(spec.tables, tables, data.feature_files)
    del tables, data

    windows = time_split(frame, spec.split, EVENT_TIME, LABEL_KNOWN)
    train_rows, valid_rows, test_rows = (frame.loc[w.index] for w in windows.windows())
    # The windows are copies: the whole frame is not held beside them through the fits.
    del frame
    valid_times = valid_rows[EVENT_TIME]
    cut = valid_times.sort_values().iloc[len(valid_times) // 2]
    stop_rows = valid_rows[valid_times < cut]
    calib_rows = valid_rows[valid_times >= cut]
    delivered = train_rows[LABEL].notna()
    stop_delivered = stop_rows[stop_rows[LABEL].notna()]

    clock = time.perf_counter()
    layout = layout_from_train(train_rows[delivered], features, list(spec.categorical))
    levels = ((1.0 - coverage) / 2.0, 0.5, (1.0 + coverage) / 2.0)
    # The boosters learn the log hours above each row's anchor (a recent transit level),
    # so a level that drifts past anything in training still moves the estimate.
    anchor = tuple(c for c in spec.options.get("anchor", ()) if c in features)
    anchor_default = float(train_rows.loc[delivered, LABEL].median()) if anchor else 0.0
    fit_train, fit_stop = (
        rows.assign(**{ABOVE_ANCHOR: rows[LABEL] - anchor_log_hours(rows, anchor, anchor_default)})
        for rows in (train_rows[delivered], stop_delivered)
    )
    # Nor the training window beside the fits' rows (its delivered rows above the anchor).
    del train_rows
    # Past `fit_rows` the boosters learn from a seeded sample of whole shipments (one
    # sample for all three): beyond a few hundred thousand rows more of them moved the test
    # figures by little and cost the most time of the run (see `models.delivery_estimate`).
    fit_rows = spec.options.get("fit_rows")
    fit_train = sample_entities(fit_train, list(spec.entity), fit_rows, FIT_HASH_KEY)
    fits = [
        fit_lightgbm(
            fit_train,
            fit_stop,
            layout,
            ABOVE_ANCHOR,
            {**spec.params, "alpha": level},
            spec.num_boost_round,
            spec.early_stopping_rounds,
        )
        for level in levels
    ]
    del fit_train
    seconds["fit"] = time.perf_counter() - clock

    clock = time.perf_counter()
    uncalibrated = WindowModel(
        spec.name,
        tuple(f.booster for f in fits),
        tuple(f.best_iteration for f in fits),
        levels,
        layout,
        fit_offsets(np.zeros(1), coverage),
        group,
        words,
        anchor,
        anchor_default,
    )
    # The boosters are the calibrated model's too: each window's rows are predicted once.
    calib_quantiles = uncalibrated.raw_log_hours(calib_rows)
    test_quantiles = uncalibrated.raw_log_hours(test_rows)
    calib_scores = row_scores(uncalibrated, calib_rows, calib_quantiles)
    split_offsets = fit_offsets(calib_scores, coverage, group_keys(calib_rows, group))
    # The adaptive offsets replay the calibration rows and then the test rows in time, each
    # outcome joining once it is known: the test rows get what a live service would have.
    replayed = pd.concat([calib_rows, test_rows])
    adaptive = adaptive_offsets(
        np.concatenate([calib_scores, row_scores(uncalibrated, test_rows, test_quantiles)]),
        replayed[EVENT_TIME],
        outcome_known(replayed),
        coverage,
        group_keys(replayed, group),
    )
    split_test = split_offsets.for_groups(group_keys(test_rows, group), len(test_rows))
    adaptive_test = adaptive.offsets[len(calib_rows) :]
    adaptive_test = np.where(np.isfinite(adaptive_test), adaptive_test, split_test)
    offsets = adaptive.latest if calibration == ADAPTIVE else split_offsets
    model = WindowModel(
        spec.name,
        uncalibrated.boosters,
        uncalibrated.best_iterations,
        levels,
        layout,
        offsets,
        group,
        words,
        anchor,
        anchor_default,
    )
    seconds["calibrate"] = time.perf_counter() - clock
    log.info("%s: conformal offsets (log hours) %s", spec.name, offsets.offsets)

    clock = time.perf_counter()
    test_offsets = {ADAPTIVE: adaptive_test, SPLIT: split_test}
    scored = evaluation_rows(
        model,
        test_rows,
        test_offsets[calibration],
        test_offsets[other_method(calibration)],
        test_quantiles,
    )
    actual = scored["actual_date"].to_numpy()
    by = {s: {k: scored[f"{s}_{k}_date"].to_numpy() for k in KINDS} for s in _SCORERS}
    metrics = measure(actual, by["model"])
    baseline_metrics = measure(actual, by["promise"])
    raw_metrics = measure(actual, by["uncalibrated"])
    other_metrics = measure(actual, by["other"])
    # On the calibration rows the model is measured with the split offsets fitted there.
    calib_split = split_offsets.for_groups(group_keys(calib_rows, group), len(calib_rows))
    valid_scored = evaluation_rows(model, calib_rows, calib_split, calib_split, calib_quantiles)
    validation_metrics = measure(
        valid_scored["actual_date"].to_numpy(),
        {k: valid_scored[f"model_{k}_date"].to_numpy() for k in KINDS},
    )
    segments = segment_table(scored, _SCORERS)
    seconds["evaluate"] = time.perf_counter() - clock
    log.info(
        "%s test: MAE %.2f d (promise %.2f), coverage %.3f (promise %.3f), width %.1f d",
        spec.name,
        metrics["mae_days"],
        baseline_metrics["mae_days"],
        metrics["coverage"],
        baseline_metrics["coverage"],
        metrics["median_width_days"],
    )
    result = TrainResult(
        name=spec.name,
        primary_metric=spec.primary_metric,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        validation_metrics=validation_metrics,
        calibration={
            "method": f"{calibration} conformal quantile regression per {' and '.join(group)}",
            "calibration": calibration,
            "offsets": offsets.offsets,
            "rows": offsets.rows,
            "alphas": offsets.alphas,
            "uncalibrated": raw_metrics,
            # The test window with the other calibration ("other" scorer of `scores`).
            "other": other_metrics,
            "other_calibration": other_method(calibration),
            # Where ACI stands after the test window: the nightly update goes on from it.
            "aci_state": adaptive.state.to_dict(),
        },
        data_version=versions["data_version"],
        features=features,
        split=windows.summary()
        | {"split_calibration_start": cut.isoformat(), "split_calibration_rows": len(calib_rows)},
        scores=scored,
        model=model,
        seconds=seconds,
    )
    if options.register:
        clock = time.perf_counter()
        result = _log_and_register(
            spec, settings, options.tracking_uri, result, fits[1].params, segments, versions,
            words, test_rows, valid_rows, raw_metrics, options.explain_rows,
        )  # fmt: skip
        seconds["log"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started
    return result


_SCORERS = ("model", "other", "uncalibrated", "promise")


def other_method(calibration: str) -> str:
    """The calibration the model does not use, measured beside it."""
    return SPLIT if calibration == ADAPTIVE else ADAPTIVE


def outcome_known(rows: pd.DataFrame) -> pd.Series:
    """When each row's outcome became known: its delivery, or for a parcel never delivered
    the instant it was settled as lost (`LABEL_KNOWN`)."""
    delivered = utc_times(rows[DELIVERED])
    settled = utc_times(rows[LABEL_KNOWN])
    return delivered.fillna(settled).reset_index(drop=True)


def row_scores(
    model: WindowModel,
    rows: pd.DataFrame,
    quantiles: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Conformity scores of the uncalibrated windows (log hours) for local delivery dates
    (`quantiles`: the rows' `raw_log_hours`, where already predicted)."""
    zones = rows[TIMEZONE].reset_index(drop=True)
    y_low, y_high = outcome_bucket(rows[EVENT_TIME], rows[DELIVERED], zones)
    lower, middle, upper = model.raw_log_hours(rows) if quantiles is None else quantiles
    ordered = np.sort(np.column_stack([lower, middle, upper]), axis=1)
    return window_scores(ordered[:, 0], ordered[:, 2], y_low, y_high)


def evaluation_rows(
    model: WindowModel,
    rows: pd.DataFrame,
    offset: np.ndarray | None = None,
    other_offset: np.ndarray | None = None,
    quantiles: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Decisions with the actual delivery date and every scorer's dates (customer's zone).

    `offset` is each row's conformal offset for the model (None: the model's own per
    group); `other_offset` those of the other calibration (scorer "other"; None: the
    model's). The quantile boosters are asked once for all three of the model's scorers
    (`quantiles`: their answer, where already predicted).
    """
    if quantiles is None:
        quantiles = model.raw_log_hours(rows)
    keep = [
        c
        for c in ("shipment_id", EVENT_TIME, LABEL, DELIVERED, PROMISED, TIMEZONE, *SEGMENTS)
        if c in rows
    ]
    out = rows[keep].reset_index(drop=True)
    out["actual_date"] = local_dates(rows[DELIVERED], out[TIMEZONE])
    for scorer, dates in (
        ("model", window_dates(model, rows, offset=offset, quantiles=quantiles)),
        ("other", window_dates(model, rows, offset=other_offset, quantiles=quantiles)),
        ("uncalibrated", window_dates(model, rows, raw=True, quantiles=quantiles)),
        ("promise", promise_dates(rows)),
    ):
        for kind in KINDS:
            out[f"{scorer}_{kind}_date"] = dates[kind]
    return out


def champion_mae(rows: pd.DataFrame):
    """The champion gate's metric: MAE in days of a registered version's estimates of the
    test rows (`training.register.score_version` returns its pyfunc output flattened, one
    row of `HOUR_COLUMNS` after another)."""
    start = pd.to_datetime(pd.Series(rows[EVENT_TIME].to_numpy()), utc=True)
    zones = rows[TIMEZONE].reset_index(drop=True)
    actual = local_dates(rows[DELIVERED], zones)

    def score(flat: np.ndarray) -> float:
        hours = np.asarray(flat, dtype=np.float64).reshape(len(rows), len(HOUR_COLUMNS))
        most_likely = hours[:, HOUR_COLUMNS.index("most_likely_hours")]
        estimate = local_dates(start + pd.to_timedelta(most_likely, unit="h"), zones)
        return window_metrics(actual, estimate, estimate, estimate)["mae_days"]

    return score


def _log_and_register(
    spec, settings, tracking_uri, result, params, segments, versions, words, test_rows,
    valid_rows, raw_metrics, explain_rows,
) -> TrainResult:  # fmt: skip
    """Log the run to MLflow, register the model and run the champion gate."""
    metrics = {f"test_{k}": v for k, v in result.metrics.items()}
    metrics |= {f"test_promise_{k}": v for k, v in result.baseline_metrics.items()}
    metrics |= {f"test_uncalibrated_{k}": v for k, v in raw_metrics.items()}
    other = result.calibration["other_calibration"]
    metrics |= {f"test_{other}_{k}": v for k, v in result.calibration["other"].items()}
    metrics |= {f"validation_{k}": v for k, v in result.validation_metrics.items()}
    metrics |= {
        metric_key("conformal_offset", k): v for k, v in result.calibration["offsets"].items()
    }
    for record in segments.to_dict("records"):
        for name in WINDOW_METRICS:
            value = record.get(name)
            if value is not None and math.isfinite(value):
                key = metric_key(
                    "test_segment", record["segment"], record["value"], record["scorer"], name
                )
                metrics[key] = float(value)
    model: WindowModel = result.model
    for level, best in zip(model.levels, model.best_iterations, strict=True):
        metrics[f"best_iteration_{level:g}"] = float(best)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        explained = write_explanations(
            model.boosters[1],
            model.layout,
            test_rows,
            words,
            out / "explain",
            num_iteration=model.best_iterations[1],
            rows=explain_rows,
        )
        segments.to_csv(out / "segment_metrics.csv", index=False)
        settled = test_rows[test_rows[DELIVERED].notna()]
        record = RunRecord(
            spec=spec,
            result=result,
            params={
                **{f"lgbm_{k}": v for k, v in params.items() if k != "alpha"},
                "quantile_levels": ",".join(f"{q:g}" for q in model.levels),
                "coverage": model.coverage,
                "conformal_group": ",".join(model.group),
                "conformal_calibration": model.calibration,
                "settled_after_days": pd.Timedelta(spec.options["settled_after"]).days,
                "fit_rows": spec.options.get("fit_rows"),
            },
            metrics=metrics,
            files={
                "data": [
                    write_json(out / "conformal.json", model.offsets.to_dict()),
                    write_json(out / ACI_STATE_FILE, result.calibration["aci_state"]),
                ],
                "evaluation": [out / "segment_metrics.csv"],
                "explain": list(explained.values()),
            },
            words=words,
            digests=versions,
            input_example=test_rows,
            signature_rows=(valid_rows, test_rows),
            promotion=PromotionRule(
                model.input_frame(settled), champion_metric=champion_mae(settled)
            ),
            version_tags={"test_coverage": f"{result.metrics['coverage']:.6f}"},
            python_model=WINDOW_PYFUNC_CODE,
        )
        return log_and_register(record, settings, out, tracking_uri)
