"""Delivery estimate: on which day will this parcel arrive, and between which days?

- Entity: shipment. Decisions: at dispatch and after each tracking scan (in transit,
  exception, out for delivery) before delivery — the decision events of `delay_risk`.
- Label: the hours from the decision to the delivery, modelled as log hours (transit times
  are close to lognormal, and a log target keeps every estimate after the decision).
- Estimator: LightGBM quantile boosters at (1 − coverage)/2, 1/2 and (1 + coverage)/2 on
  the `delivery_estimate_v1` features plus the decision-time hours; the window is then
  conformally calibrated (`training.conformal`) on the latest labelled rows before the test
  window, per carrier and decision stage, at the level of calendar days in the customer's
  time zone.
- The most likely date is the local date of the median instant: the median minimises the
  expected absolute error in days.
- Lost and undelivered parcels: a shipment is used once its outcome is settled, i.e. it was
  delivered or its promise lies `SETTLED_AFTER` before the data's end (the rule does not
  look at the outcome, so no long delivery is selected out). A settled parcel without a
  delivery is lost: it has no delivery time to learn from, so it is left out of training,
  but it counts against coverage — in the conformal calibration (a score of +inf) and in
  every evaluation — and is left out of the errors in days.
- Baseline: the shop's own promise (`promised_ts`) on the same rows: its date as the point
  estimate and (decision day, promised day) as its window.
- Segments: carrier, lane and the decision stage.
- Serving: `WindowModel.predict_window(rows, as_of, timezone)` (see `training.window`).
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
import pyarrow as pa
from scipy.stats import norm

from features.build.shipments import UPDATE_EVENTS
from models.delay_risk import (
    SHIPMENT_CATEGORICAL,
    SHIPMENT_DERIVED,
    SHIPMENT_EXCLUDE,
    data_end,
    decision_rows,
)
from training.conformal import fit_offsets, window_scores
from training.entry import ModelEntry, OracleComparison
from training.evaluate import metric_key
from training.explain import write_explanations
from training.fit import fit_lightgbm, layout_from_train
from training.loop import (
    INPUT_EXAMPLE_ROWS,
    SIGNATURE_ROWS,
    TrainResult,
    _write_json,
    load_raw_tables,
    training_data,
)
from training.register import (
    data_version,
    default_artifact_root,
    default_tracking_uri,
    log_run,
    promote,
    record_promotion,
    tag_version,
    tracking,
)
from training.spec import EVENT_TIME, LABEL, LABEL_KNOWN, ModelSpec
from training.split import SplitConfig, time_split
from training.window import (
    HOUR_COLUMNS,
    WindowModel,
    WindowPyfunc,
    group_keys,
    local_dates,
    outcome_bucket,
    window_metrics,
)

log = logging.getLogger(__name__)

NAME = "delivery_estimate"
COVERAGE = 0.90
PRIMARY_METRIC = "mae_days"
SETTLED_AFTER = pd.Timedelta(days=14)
# Conformal groups: each carrier at each decision stage, so the window holds its coverage
# at dispatch as well as after a scan, and for an erratic carrier as for a steady one.
GROUP = ("carrier", "stage")
SEGMENTS = ("carrier", "lane", "stage")
DECISION_STAGES = ("dispatch", *UPDATE_EVENTS)
# Columns the label events carry besides the label, for evaluation and the window's dates.
DELIVERED = "delivered_ts"
PROMISED = "promised_ts"
TIMEZONE = "timezone"
WINDOW_METRICS = (
    "rows",
    "mae_days",
    "exact_share",
    "within_1d_share",
    "coverage",
    "median_width_days",
)


def customer_timezones(tables: Mapping[str, pa.Table]) -> pd.DataFrame:
    """order_id → the customer's IANA time zone (empty when orders or customers are absent)."""
    if "orders" not in tables or "customers" not in tables:
        return pd.DataFrame({"order_id": pd.Series(dtype=object), TIMEZONE: []})
    orders = tables["orders"].select(["order_id", "customer_id"]).to_pandas()
    customers = tables["customers"].select(["customer_id", "timezone"]).to_pandas()
    return orders.merge(customers, on="customer_id", how="left")[["order_id", TIMEZONE]]


def label_events(tables: dict[str, pa.Table]) -> pd.DataFrame:
    """One row per (shipment, decision instant) of a settled shipment, with its delivery.

    Args:
        tables: Raw tables: `shipments`; when present `tracking_events`, and `orders` with
            `customers` for the customer's time zone (UTC otherwise).

    Returns:
        shipment_id, event_timestamp, label (log hours to delivery; NaN for a lost parcel),
        label_ts (when the outcome is settled: the delivery, or `SETTLED_AFTER` past the
        promise, whichever is later), delivered_ts, promised_ts and timezone.
    """
    ships = (
        tables["shipments"]
        .select(["shipment_id", "order_id", "shipped_ts", "promised_ts", "delivered_ts"])
        .to_pandas()
    )
    for column in ("shipped_ts", PROMISED, DELIVERED):
        ships[column] = pd.to_datetime(ships[column], utc=True)
    events = tables.get("tracking_events")
    end = data_end(ships, events)
    settles = ships[PROMISED] + SETTLED_AFTER
    ships = ships[settles <= end]
    zones = customer_timezones(tables)
    ships = ships.merge(zones, on="order_id", how="left")
    ships[TIMEZONE] = ships[TIMEZONE].fillna("UTC")
    settled = ships[PROMISED] + SETTLED_AFTER
    known = ships[DELIVERED].where(ships[DELIVERED] > settled, settled)
    # Decisions stop at delivery; a lost parcel is scored until it is settled as lost.
    closes = ships[DELIVERED].fillna(settled)
    per_shipment = pd.DataFrame(
        {
            "shipment_id": ships["shipment_id"].to_numpy(),
            LABEL_KNOWN: known.to_numpy(),
            DELIVERED: ships[DELIVERED].to_numpy(),
            PROMISED: ships[PROMISED].to_numpy(),
            TIMEZONE: ships[TIMEZONE].to_numpy(),
            "_closes": closes.to_numpy(),
        }
    )
    rows = decision_rows(ships, events, per_shipment)
    hours = (rows[DELIVERED] - rows[EVENT_TIME]) / pd.Timedelta(hours=1)
    rows[LABEL] = np.log(hours.to_numpy(dtype=np.float64))
    return rows.sort_values(["shipment_id", EVENT_TIME], kind="stable").reset_index(drop=True)


def promise_hours(frame: pd.DataFrame) -> np.ndarray:
    """Hours from each decision to the promise (the baseline's point estimate)."""
    return ((frame[PROMISED] - frame[EVENT_TIME]) / pd.Timedelta(hours=1)).to_numpy(np.float64)


SPEC = ModelSpec(
    name=NAME,
    entity=("shipment_id",),
    decision_time="at dispatch and after each tracking scan, before delivery",
    raw_tables=("shipments", "tracking_events", "orders", "customers"),
    label_events=label_events,
    feature_service="delivery_estimate_v1",
    categorical=SHIPMENT_CATEGORICAL,
    exclude=SHIPMENT_EXCLUDE,
    derived=SHIPMENT_DERIVED,
    baseline=promise_hours,
    segments=SEGMENTS,
    primary_metric=PRIMARY_METRIC,
    params={
        "objective": "quantile",
        "metric": "quantile",
        "num_leaves": 31,
        "learning_rate": 0.05,
        "min_data_in_leaf": 40,
    },
    baseline_is_probability=False,
    words={
        "stage": "Tracking stage",
        "scans_so_far": "Tracking scans so far",
        "exceptions_so_far": "Exception scans so far",
        "last_event_type": "Latest tracking scan",
        "hours_since_prev_scan": "Hours between the latest two scans",
        "dispatch_weekday": "Weekday of dispatch (Monday = 0)",
    },
)


def window_dates(
    model: WindowModel, rows: pd.DataFrame, *, raw: bool = False
) -> dict[str, np.ndarray]:
    """Local dates of the model's (or the uncalibrated quantiles') estimate and window."""
    if raw:
        lower, middle, upper = model.raw_log_hours(rows)
        hours = {"most_likely": middle, "earliest": lower, "latest": upper}
        hours = {k: np.exp(v) for k, v in hours.items()}
    else:
        predicted = model.predict_hours(rows)
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
                dates = {k: part[f"{scorer}_{k}_date"].to_numpy() for k in _KINDS}
                records.append(
                    {"segment": segment, "value": str(value), "scorer": scorer}
                    | measure(actual, dates)
                )
    return pd.DataFrame(records)


_KINDS = ("most_likely", "earliest", "latest")


def train(
    store,
    settings,
    *,
    tables: Mapping[str, pa.Table] | None = None,
    tracking_uri: str | None = None,
    register: bool = True,
    coverage: float = COVERAGE,
    split: SplitConfig | None = None,
    explain_rows: int = 2000,
) -> TrainResult:
    """Train, calibrate, evaluate, explain, log and register the delivery estimate.

    Args:
        store: The Feast store (definitions applied, offline tables published).
        settings: Data folder and the rest of the configuration.
        tables: Raw tables; by default the published raw version's.
        tracking_uri: MLflow URI (default as in `training.loop.train`).
        register: Log to MLflow and register (False: train and evaluate only).
        coverage: Stated coverage of the window.
        split: Time split (default 60/20/20; the validation window is halved in time: the
            first half stops the boosting, the later half calibrates the window).
        explain_rows: Test rows explained with SHAP.

    Returns:
        The run's result: `metrics` of the model and `baseline_metrics` of the promise on
        the same test rows (primary: `mae_days`, lower is better); `scores` one row per test
        decision with the dates of the model, the uncalibrated quantiles and the promise.
    """
    spec = SPEC if split is None else _with_split(split)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if tables is None:
        present = load_raw_tables(settings, ("shipments",))
        for name in spec.raw_tables[1:]:
            try:
                present |= load_raw_tables(settings, (name,))
            except FileNotFoundError:
                log.info("%s: no %s table; going without", NAME, name)
        tables = present
    data = training_data(spec, store, tables)
    frame, features = data.frame, data.features
    seconds["features"] = time.perf_counter() - started

    windows = time_split(frame, spec.split, EVENT_TIME, LABEL_KNOWN)
    train_rows, valid_rows, test_rows = (frame.loc[w.index] for w in windows.windows())
    valid_times = valid_rows[EVENT_TIME]
    cut = valid_times.sort_values().iloc[len(valid_times) // 2]
    stop_rows = valid_rows[valid_times < cut]
    calib_rows = valid_rows[valid_times >= cut]
    delivered = train_rows[LABEL].notna()
    stop_delivered = stop_rows[stop_rows[LABEL].notna()]

    clock = time.perf_counter()
    layout = layout_from_train(train_rows[delivered], features, list(spec.categorical))
    levels = ((1.0 - coverage) / 2.0, 0.5, (1.0 + coverage) / 2.0)
    fits = [
        fit_lightgbm(
            train_rows[delivered],
            stop_delivered,
            layout,
            LABEL,
            {**spec.params, "alpha": level},
            spec.num_boost_round,
            spec.early_stopping_rounds,
        )
        for level in levels
    ]
    seconds["fit"] = time.perf_counter() - clock

    clock = time.perf_counter()
    zones = calib_rows[TIMEZONE].reset_index(drop=True)
    y_low, y_high = outcome_bucket(calib_rows[EVENT_TIME], calib_rows[DELIVERED], zones)
    uncalibrated = WindowModel(
        NAME,
        tuple(f.booster for f in fits),
        tuple(f.best_iteration for f in fits),
        levels,
        layout,
        fit_offsets(np.zeros(1), coverage),
        GROUP,
        data.words,
    )
    lower, middle, upper = uncalibrated.raw_log_hours(calib_rows)
    ordered = np.sort(np.column_stack([lower, middle, upper]), axis=1)
    scores = window_scores(ordered[:, 0], ordered[:, 2], y_low, y_high)
    offsets = fit_offsets(scores, coverage, group_keys(calib_rows, GROUP))
    model = WindowModel(
        NAME,
        uncalibrated.boosters,
        uncalibrated.best_iterations,
        levels,
        layout,
        offsets,
        GROUP,
        data.words,
    )
    seconds["calibrate"] = time.perf_counter() - clock
    log.info("%s: conformal offsets (log hours) %s", NAME, offsets.offsets)

    clock = time.perf_counter()
    scored = evaluation_rows(model, test_rows)
    actual = scored["actual_date"].to_numpy()
    by = {s: {k: scored[f"{s}_{k}_date"].to_numpy() for k in _KINDS} for s in _SCORERS}
    metrics = measure(actual, by["model"])
    baseline_metrics = measure(actual, by["promise"])
    raw_metrics = measure(actual, by["uncalibrated"])
    valid_scored = evaluation_rows(model, calib_rows)
    validation_metrics = measure(
        valid_scored["actual_date"].to_numpy(),
        {k: valid_scored[f"model_{k}_date"].to_numpy() for k in _KINDS},
    )
    segments = segment_table(scored, _SCORERS)
    seconds["evaluate"] = time.perf_counter() - clock
    log.info(
        "%s test: MAE %.2f d (promise %.2f), coverage %.3f (promise %.3f), width %.1f d",
        NAME,
        metrics["mae_days"],
        baseline_metrics["mae_days"],
        metrics["coverage"],
        baseline_metrics["coverage"],
        metrics["median_width_days"],
    )
    versions = data_version(
        {n: tables[n] for n in spec.raw_tables if n in tables}, data.feature_files
    )
    result = TrainResult(
        name=NAME,
        run_id=None,
        version=None,
        promotion=None,
        primary_metric=PRIMARY_METRIC,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        validation_metrics=validation_metrics,
        calibration={
            "method": f"conformal quantile regression per {' and '.join(GROUP)}",
            "offsets": offsets.offsets,
            "rows": offsets.rows,
            "uncalibrated": raw_metrics,
        },
        data_version=versions["data_version"],
        features=features,
        split=windows.summary()
        | {"split_calibration_start": cut.isoformat(), "split_calibration_rows": len(calib_rows)},
        scores=scored,
        model=model,
        seconds=seconds,
    )
    if register:
        clock = time.perf_counter()
        _log_and_register(
            spec, settings, tracking_uri, result, fits[1].params, segments, versions,
            data, test_rows, valid_rows, raw_metrics, explain_rows,
        )  # fmt: skip
        seconds["log"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started
    return result


_SCORERS = ("model", "uncalibrated", "promise")


def _with_split(split: SplitConfig) -> ModelSpec:
    import dataclasses

    return dataclasses.replace(SPEC, split=split)


def evaluation_rows(model: WindowModel, rows: pd.DataFrame) -> pd.DataFrame:
    """Decisions with the actual delivery date and every scorer's dates (customer's zone)."""
    keep = [
        c
        for c in ("shipment_id", EVENT_TIME, LABEL, DELIVERED, PROMISED, TIMEZONE, *SEGMENTS)
        if c in rows
    ]
    out = rows[keep].reset_index(drop=True)
    out["actual_date"] = local_dates(rows[DELIVERED], out[TIMEZONE])
    for scorer, dates in (
        ("model", window_dates(model, rows)),
        ("uncalibrated", window_dates(model, rows, raw=True)),
        ("promise", promise_dates(rows)),
    ):
        for kind in _KINDS:
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
    spec, settings, tracking_uri, result, params, segments, versions, data, test_rows,
    valid_rows, raw_metrics, explain_rows,
) -> None:  # fmt: skip
    """Log the run to MLflow, register the model and run the champion gate."""
    configured = getattr(settings, "mlflow_tracking_uri", None)
    uri = tracking_uri or configured or default_tracking_uri(settings)
    artifact_root = default_artifact_root(settings) if uri.startswith("sqlite:") else None
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
    metrics = {f"test_{k}": v for k, v in result.metrics.items()}
    metrics |= {f"test_promise_{k}": v for k, v in result.baseline_metrics.items()}
    metrics |= {f"test_uncalibrated_{k}": v for k, v in raw_metrics.items()}
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
    params_logged = {
        **{f"lgbm_{k}": v for k, v in params.items() if k != "alpha"},
        "quantile_levels": ",".join(f"{q:g}" for q in model.levels),
        "coverage": model.coverage,
        "conformal_group": ",".join(GROUP),
        "settled_after_days": SETTLED_AFTER.days,
        "feature_service": spec.feature_service,
        "features": ",".join(result.features),
        "n_features": len(result.features),
        "categorical": ",".join(spec.categorical),
        "primary_metric": PRIMARY_METRIC,
        "split_fractions": spec.split.fractions,
        "split_purge": spec.split.purge,
        **result.split,
        "data_version": result.data_version,
    }
    tags = {
        "model": NAME,
        "entity": ",".join(spec.entity),
        "decision_time": spec.decision_time,
        "data_version": result.data_version,
        **{f"digest.{k}": v for k, v in versions.items() if k != "data_version"},
    }
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        explained = write_explanations(
            model.boosters[1],
            model.layout,
            test_rows,
            data.words,
            out / "explain",
            num_iteration=model.best_iterations[1],
            rows=explain_rows,
        )
        described = [{"name": f, "description": data.words.get(f, "")} for f in data.features]
        files = {
            "data": [
                _write_json(out / "features.json", described),
                _write_json(out / "split.json", result.split),
                _write_json(out / "conformal.json", model.offsets.to_dict()),
            ],
            "evaluation": [out / "segment_metrics.csv"],
            "explain": list(explained.values()),
        }
        segments.to_csv(out / "segment_metrics.csv", index=False)
        with tracking(uri):
            run_id, info = log_run(
                experiment=NAME,
                artifact_root=artifact_root,
                run_name=f"{NAME}-{result.data_version[:8]}",
                params=params_logged,
                metrics=metrics,
                tags=tags,
                artifacts=files,
                model=model,
                input_example=test_rows.head(INPUT_EXAMPLE_ROWS),
                signature_rows=pd.concat([valid_rows, test_rows]).head(SIGNATURE_ROWS),
                registered_name=NAME,
                python_model=WindowPyfunc(),
            )
            version = str(info.registered_model_version)
            settled = test_rows[test_rows[DELIVERED].notna()]
            promotion = promote(
                NAME,
                version,
                PRIMARY_METRIC,
                result.metrics[PRIMARY_METRIC],
                model.input_frame(settled),
                None,
                0.0,
                champion_metric=champion_mae(settled),
                higher_is_better=False,
            )
            tag_version(
                NAME,
                version,
                {
                    "data_version": result.data_version,
                    f"test_{PRIMARY_METRIC}": f"{result.metrics[PRIMARY_METRIC]:.6f}",
                    "test_coverage": f"{result.metrics['coverage']:.6f}",
                    "promotion": promotion.reason,
                },
            )
            record_promotion(run_id, promotion)
    result.run_id = run_id
    result.version = version
    result.promotion = promotion


def truth_rows(scores: pd.DataFrame, truth_dir: Path, coverage: float = COVERAGE) -> pd.DataFrame:
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
    zones = rows[TIMEZONE].reset_index(drop=True)
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


def oracle(result: TrainResult, truth_dir: Path) -> OracleComparison:
    """MAE in days of the model, the promise and the simulator's truth on dispatch rows."""
    rows = truth_rows(result.scores, truth_dir)
    actual = rows["actual_date"].to_numpy()
    mae = {
        s: measure(actual, {k: rows[f"{s}_{k}_date"].to_numpy() for k in _KINDS})["mae_days"]
        for s in ("model", "promise", "oracle")
    }
    return OracleComparison(len(rows), mae["model"], mae["promise"], mae["oracle"])


ENTRY = ModelEntry(
    name=NAME,
    raw_tables=SPEC.raw_tables,
    train=train,
    metric="test MAE (days)",
    oracle=oracle,
)
