"""Flow `monitor`: how the newest days drift from what each champion was trained on.

One task per monitored model (`training.monitor`): its drift table is appended to
`<data_dir>/monitoring/drift.parquet` (one row per model, segment and column, with the
instant of the run and the champion's version), its realised quality on the newest labelled
window to `quality.parquet`, and both are logged to MLflow, in the experiment `monitor`,
with the Evidently HTML report as an artefact.
"""

from __future__ import annotations

import importlib
import json
import logging
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from aftersale.collector import libraries_loading
from aftersale.console import report_stage
from aftersale.settings import get_settings

if TYPE_CHECKING:
    from training.monitor import MonitoredData

log = logging.getLogger(__name__)

EXPERIMENT = "monitor"
DRIFT_FILE = "drift.parquet"
QUALITY_FILE = "quality.parquet"
DEFAULT_WINDOW_DAYS = 28
# The offer model, whose realised quality adds its policy's value; the figures logged.
OFFERS = "next_best_offer"
POLICY_FIGURES = ("policy_value_dr", "policy_popularity_dr", "policy_logging_mean")


@dataclass(frozen=True)
class MonitorResult:
    """One model's drift, where it was recorded, and the windows compared."""

    model: str
    version: str
    table: pd.DataFrame
    report: Path
    run_id: str
    reference_span: tuple[pd.Timestamp, pd.Timestamp]
    current_span: tuple[pd.Timestamp, pd.Timestamp]
    quality: dict | None = None
    retrain: list[str] | None = None


# The libraries the stages import, loaded while the raw tables are read (`preload`).
STAGE_LIBRARIES = (
    "mlflow",
    "lightgbm",
    "sklearn.metrics",
    "features.store.config",
    "models.served.registry",
    "training.data",
    "training.model_cards",
    "training.policy",
    "evidently.legacy.report",
    "evidently.legacy.metrics",
    "evidently.legacy.calculations.stattests.registry",
)


def preload(modules: tuple[str, ...] = STAGE_LIBRARIES) -> threading.Thread:
    """Import `modules` on a background thread and return it (started).

    Reading the raw tables is mostly Arrow's work, outside the interpreter lock, and the
    stages' libraries (Feast, MLflow, Evidently) take seconds to import: loaded meanwhile,
    they are ready when the first stage starts (the README's Nightly pipeline gives the
    measured effect). The cycle collector waits until they are loaded, and then passes
    over them (`aftersale.collector`). A module that fails to import here is left to the
    stage that needs it, which then raises as it would have.
    """

    def load() -> None:
        with libraries_loading():
            for module in modules:
                try:
                    importlib.import_module(module)
                except Exception:
                    log.debug("preloading %s failed", module, exc_info=True)

    thread = threading.Thread(target=load, name="monitor-preload", daemon=True)
    thread.start()
    return thread


# A monitor run is one model version on one window: rerunning it replaces its rows.
DRIFT_RUN = ("model", "version", "current_end")
QUALITY_RUN = ("model", "version", "window_end")


def _append(table: pd.DataFrame, path: Path, run: tuple[str, ...]) -> Path:
    """Add rows to the monitoring table, replacing those of the same run (`run` columns), so
    that monitoring a day twice leaves one set of rows; written whole beside it and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from serving.queue import write_atomic

    if path.is_file():
        kept = pq.read_table(path).to_pandas()
        if len(kept) and all(c in kept for c in run):
            ran = pd.MultiIndex.from_frame(table[list(run)].astype(str))
            same = pd.MultiIndex.from_frame(kept[list(run)].astype(str)).isin(ran)
            kept = kept[~same]
        table = pd.concat([kept, table], ignore_index=True)
    return write_atomic(pa.Table.from_pandas(table, preserve_index=False), path)


def _data(names) -> MonitoredData:
    """The raw tables of the current published version that the monitor reads (`names`;
    those not ingested are left out), cut to at most `AFTERSALE_MONITOR_CUSTOMERS`
    customers: those `read_ahead` started reading, when it read the same, else read now."""
    from training.monitor import monitored_data

    key = _reading(names)
    with _ahead_lock:
        ahead = _ahead.pop("read", None)
    if ahead is not None and ahead[0] == key:
        return ahead[1].result()
    return monitored_data(*key)


def _reading(names) -> tuple[Path, tuple[str, ...], int]:
    """What the monitor reads of the raw tables `names`: the current published version, the
    tables and the bound on customers (`training.monitor.monitored_data`'s arguments)."""
    from features.ingest import latest_raw

    settings = get_settings()
    return latest_raw(settings.raw_root), tuple(names), settings.monitor_customers


# The monitor's reading of the raw tables, started before its flow (`read_ahead`): the key
# of what it reads and its result to come.
_ahead: dict[str, tuple[tuple, Future]] = {}
_ahead_lock = threading.Lock()


def read_ahead(models: list[str] | None = None) -> None:
    """Start reading the raw tables that the next `monitor` run in this process reads for
    `models` (None: all), on a thread, while the caller starts the flow.

    The reading is mostly the disk's and Arrow's work, outside the interpreter lock, and
    Prefect's start is mostly its own process's: the two overlap. The flow's read stage
    then waits for this reading, or reads afresh when it asks for other tables, another
    published version or another number of customers. An error raised by the reading
    is raised by the read stage. Without a flow run, the reading is left to finish.
    """
    # What the reading imports is imported here, not beside Prefect's imports on the thread.
    from features.contract import io, subset  # noqa: F401
    from training.monitor import monitored_data

    try:
        key = _reading(monitored_tables(models))
    except (FileNotFoundError, KeyError):
        return  # nothing to read, or a model the flow refuses by name
    result: Future = Future()

    def read() -> None:
        if not result.set_running_or_notify_cancel():
            return
        try:
            result.set_result(monitored_data(*key))
        except BaseException as error:
            result.set_exception(error)

    with _ahead_lock:
        _ahead["read"] = (key, result)
    threading.Thread(target=read, name="monitor-read-ahead", daemon=True).start()


def monitored_tables(names=None) -> list[str]:
    """The raw tables the monitored models read (default: every monitored one)."""
    from models import MODELS, delivery_estimate, outreach_uplift
    from training.monitor import SEGMENTS

    specs = [MODELS[n] for n in (names or SEGMENTS)]
    if names is None:
        specs += [delivery_estimate.SPEC, outreach_uplift.SPEC]
    return list(dict.fromkeys(t for s in specs for t in (*s.raw_tables, *s.optional_tables)))


def _report(result, folder: Path, name: str, uri: str, run_id: str) -> Path:
    """The whole-window drift report as HTML, logged to the run `run_id` as an artefact."""
    from mlflow import MlflowClient

    from training.monitor import save_html

    path = save_html(result, folder, name)
    MlflowClient(tracking_uri=uri).log_artifact(run_id, str(path), "monitor")
    return path


class ReportWriter:
    """Writes the models' drift reports on one thread of its own (`monitor_model`)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-report")
        self._pending: list[Future] = []

    def submit(self, result, folder: Path, name: str, uri: str, run_id: str) -> None:
        """Write and log one report (`_report`) once those before it are written."""
        self._pending.append(self._pool.submit(_report, result, folder, name, uri, run_id))

    def close(self, raise_errors: bool = True) -> int:
        """Wait for every report and return how many were written; the first that failed
        raises its error (only logged with `raise_errors` false)."""
        errors = []
        for future in self._pending:
            if future.exception() is not None:
                errors.append(future.exception())
                log.error("a drift report was not written: %s", future.exception())
        self._pool.shutdown()
        if errors and raise_errors:
            raise errors[0]
        return len(self._pending) - len(errors)


@task(cache_policy=NO_CACHE)
def monitor_model(
    name: str,
    window_days: int,
    data: MonitoredData | None = None,
    reports: ReportWriter | None = None,
) -> MonitorResult:
    """Drift of one champion's newest days against its training window, recorded (`data`:
    the run's raw tables, read here when None).

    The HTML report is written and logged before this returns, or, given `reports`, on that
    writer's thread while the caller goes on (the caller then waits for it). Rendering a
    report is Python's work and the next model's feature reads are mostly DuckDB's, outside
    the interpreter lock, so the two overlap.
    """
    import mlflow

    from features.instants import watermark
    from features.store.config import feature_store
    from models import MODELS
    from models.served.registry import ModelUnavailableError, load_champion, tracking
    from models.served.retrain import mark
    from training.model_cards import champions
    from training.monitor import (
        SCORE,
        SEGMENTS,
        champion_span,
        customers_at,
        drift,
        estimated_auc,
        monitored_events,
        monitored_frame,
        offer_policy_quality,
        realised_quality,
        report_path,
        retrain_reasons,
        windows,
    )

    settings = get_settings()
    spec = MODELS[name]
    uri = settings.tracking_uri
    found = champions(uri, [name])
    if not found:
        raise ModelUnavailableError(f"{name}: no champion to monitor")
    champion = found[0]
    params = champion.params
    _, model = load_champion(name, uri)
    data = data or _data(monitored_tables([name]))
    tables = data.of(spec)
    # The data's end: decisions of the newest days, and labels known by then.
    end = watermark(dict(tables), happened=True)
    train_start, train_end, seen_end = champion_span(params)
    reference_rows = settings.monitor_reference_rows
    decisions = spec.label_events(dict(tables))
    # Only the decisions compared get their features retrieved and scored.
    events = monitored_events(
        decisions,
        spec.entity,
        train_start,
        train_end,
        window_days,
        end,
        reference_rows,
    )
    store = feature_store(settings)
    policy = None
    if name == OFFERS:
        # An offer model is judged by what its policy earns, not only by its acceptance AUC;
        # the decisions compared are read in the same store scan as those valued.
        try:
            policy = offer_policy_quality(
                model,
                spec,
                store,
                tables,
                end,
                window_days,
                (train_start, train_end),
                champion.metrics,
                events=decisions,
                max_decisions=reference_rows,
                read_along=[events.reset_index(drop=True)],
            )
        except ValueError as error:
            log.warning("%s: no policy value yet: %s", name, error)
    at_end = None
    if tuple(spec.entity) == ("customer_id",):
        # Customer labels take months: the newest decisions are those at the data's end.
        # At most as many customers as the reference holds, drawn the same seeded way, and
        # read in the same store scan as the decisions compared.
        at_end = customers_at(tables, end, reference_rows)
    frame, features, current = monitored_frame(
        spec,
        store,
        tables,
        model,
        events,
        retrieved=None if policy is None else policy.read_along[0],
        current=at_end,
    )
    spans = windows(
        frame,
        train_start,
        train_end,
        window_days,
        current=current,
        reference_rows=reference_rows,
        keys=spec.entity,
    )
    result = drift(name, spans, features, spec.categorical, SEGMENTS.get(name, ()))
    try:
        quality = realised_quality(
            name,
            frame,
            end,
            window_days,
            spec.capacity,
            champion.metrics,
            rows=reference_rows,
            keys=spec.entity,
            seen_end=seen_end,
        )
    except ValueError as error:
        log.warning("%s: no realised quality yet: %s", name, error)
        quality = None
    if quality is not None and policy is not None:
        quality |= policy.figures
    # The newest days have no labels yet: their AUC estimated from the calibrated scores.
    estimate = estimated_auc(spans.current[SCORE].to_numpy())
    if quality is not None:
        quality["estimated_current_roc_auc"] = estimate
    table = result.table.assign(
        version=champion.version,
        monitored_ts=pd.Timestamp.now(tz="UTC"),
        current_start=spans.current_span[0],
        current_end=spans.current_span[1],
    )
    overall = table[table["segment"] == "all"]
    features_only = overall[overall["kind"] == "feature"]
    prediction = overall[overall["kind"] == "prediction"]
    with tracking(uri):
        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run(run_name=f"{name} v{champion.version} drift") as run:
            mlflow.set_tags({"model": name, "version": champion.version})
            mlflow.log_params(
                {
                    "model": name,
                    "version": champion.version,
                    "reference_start": spans.reference_span[0].isoformat(),
                    "reference_end": spans.reference_span[1].isoformat(),
                    "current_start": spans.current_span[0].isoformat(),
                    "current_end": spans.current_span[1].isoformat(),
                    "window_days": window_days,
                }
            )
            realised = (
                {}
                if quality is None
                else {
                    f"realised_{k}": float(quality[k])
                    for k in ("roc_auc", "ece", "rows", *POLICY_FIGURES)
                    if k in quality and np.isfinite(float(quality[k]))
                }
            )
            realised["estimated_roc_auc_newest_days"] = estimate
            mlflow.log_metrics(
                {
                    **realised,
                    "drifted_feature_share": float(features_only["drifted"].mean()),
                    "prediction_drift": float(prediction["value"].iloc[0]),
                    "drifted_segments": int(
                        table[(table["segment"] != "all") & table["drifted"]]["segment"].nunique()
                    ),
                }
            )
            run_id = run.info.run_id
    folder = settings.monitoring_dir / "reports"
    if reports is None:
        report = _report(result, folder, name, uri, run_id)
    else:
        reports.submit(result, folder, name, uri, run_id)
        report = report_path(folder, name)
    _append(table, settings.monitoring_dir / DRIFT_FILE, DRIFT_RUN)
    reasons = retrain_reasons(
        result.table,
        quality,
        settings.retrain_drift_share,
        settings.retrain_auc_drop,
        settings.retrain_ece_rise,
        estimated=estimate,
        estimated_before=estimated_auc(spans.reference[SCORE].to_numpy()),
    )
    if reasons:
        why = "; ".join(reasons)
        since = pd.Timestamp.now(tz="UTC").isoformat()
        mark(settings.monitoring_dir, name, why, since)
        log.warning("%s v%s marked for retraining: %s", name, champion.version, why)
    if quality is not None:
        row = pd.DataFrame(
            [
                {
                    **quality,
                    "version": champion.version,
                    "monitored_ts": table["monitored_ts"].iloc[0],
                }
            ]
        )
        _append(row, settings.monitoring_dir / QUALITY_FILE, QUALITY_RUN)
    log.info(
        "%s v%s: %d of %d features drifted; prediction drift %s",
        name,
        champion.version,
        int(features_only["drifted"].sum()),
        len(features_only),
        "crossed" if bool(prediction["drifted"].iloc[0]) else "within",
    )
    return MonitorResult(
        name,
        champion.version,
        result.table,
        report,
        run_id,
        spans.reference_span,
        spans.current_span,
        quality,
        reasons,
    )


def _champion_quality(
    spec, select, measure, figures: tuple[str, ...], data: MonitoredData | None
) -> dict | None:
    """One champion's realised quality on its newest labelled rows, `measure(model, frame,
    end, tested)` of the decisions `select(events, end)` keeps (with their features as
    training reads them: only those rows are retrieved), logged to MLflow (`figures`) and
    appended to the quality table; None without a champion (`data`: the run's raw tables,
    read here when None)."""
    import mlflow

    from features.instants import watermark
    from features.store.config import feature_store
    from models.served.registry import load_champion, tracking
    from training.data import training_data
    from training.model_cards import champions

    settings = get_settings()
    uri = settings.tracking_uri
    found = champions(uri, [spec.name])
    if not found:
        log.info("%s: no champion to monitor", spec.name)
        return None
    champion = found[0]
    _, model = load_champion(spec.name, uri)
    data = data or _data([*spec.raw_tables, *spec.optional_tables])
    tables = data.of(spec)
    end = watermark(dict(tables), happened=True)
    events = select(spec.label_events(dict(tables)), end)
    frame = (
        events
        if events.empty
        else training_data(spec, feature_store(settings), tables, events).frame
    )
    quality = measure(model, frame, end, champion.metrics)
    with tracking(uri):
        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run(run_name=f"{spec.name} v{champion.version} quality"):
            mlflow.set_tags({"model": spec.name, "version": champion.version})
            mlflow.log_metrics(
                {f"realised_{k}": float(quality[k]) for k in figures if np.isfinite(quality[k])}
            )
    row = {**quality, "version": champion.version, "monitored_ts": pd.Timestamp.now(tz="UTC")}
    _append(pd.DataFrame([row]), settings.monitoring_dir / QUALITY_FILE, QUALITY_RUN)
    return quality


@task(cache_policy=NO_CACHE)
def monitor_windows(window_days: int, data: MonitoredData | None = None) -> dict | None:
    """The delivery-window champion's MAE and coverage on its newest settled parcels (a
    seeded draw of at most `AFTERSALE_MONITOR_REFERENCE_ROWS` of them), recorded beside the
    classifiers' quality (None without a champion)."""
    from models import delivery_estimate
    from training.monitor import bounded_window, measured_window, window_quality

    spec, rows = delivery_estimate.SPEC, get_settings().monitor_reference_rows
    return _champion_quality(
        spec,
        # At most as many settled parcel decisions as the other windows hold, drawn alike.
        lambda events, end: bounded_window(
            measured_window(events, end, window_days), spec.entity, rows
        ),
        lambda model, frame, end, tested: window_quality(model, frame, end, window_days, tested),
        ("mae_days", "coverage", "rows"),
        data,
    )


@task(cache_policy=NO_CACHE)
def update_window_offsets() -> dict | None:
    """Feed the outcomes known since the delivery-window champion's offsets were last
    updated through ACI and publish the new offsets (None without a champion or a
    registered ACI state)."""
    import mlflow

    from features.contract.schema import CONTRACT
    from features.instants import watermark
    from features.store.config import feature_store
    from models import delivery_estimate
    from models.served.registry import ModelUnavailableError, load_champion, tracking
    from models.served.window import OFFSETS_FOLDER
    from training.conformal import AciState
    from training.data import load_raw_tables, training_data
    from training.delivery import ACI_STATE_FILE
    from training.window_offsets import (
        advance,
        open_since,
        publish,
        read_state,
        rows_to_replay,
    )

    spec = delivery_estimate.SPEC
    settings = get_settings()
    uri = settings.tracking_uri
    try:
        champion, model = load_champion(spec.name, uri)
    except ModelUnavailableError as error:
        log.info("%s: no champion whose offsets to update: %s", spec.name, error)
        return None
    folder = settings.serving_dir / OFFSETS_FOLDER
    state = read_state(folder, champion.version)
    if state is None:
        with tracking(uri), tempfile.TemporaryDirectory() as scratch:
            try:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"runs:/{champion.run_id}/data/{ACI_STATE_FILE}",
                    dst_path=scratch,
                )
            except Exception as error:
                log.info("%s v%s: no ACI state registered: %s", spec.name, champion.version, error)
                return None
            state = AciState.from_dict(json.loads(Path(path).read_text()))
    # The columns the outcomes read, and every instant: the night's end is taken from them.
    columns = {
        name: dict.fromkeys(
            [
                *delivery_estimate.OUTCOME_COLUMNS.get(name, ()),
                *(c.name for c in CONTRACT[name].columns if c.kind == "timestamp"),
            ]
        )
        for name in (*spec.raw_tables, *spec.optional_tables)
    }
    tables = load_raw_tables(settings, spec.raw_tables, spec.optional_tables, columns)
    cut = watermark(dict(tables), happened=True)
    # Only the parcels still open at the last update are read again.
    tables = open_since(tables, state.consumed_until)
    events = rows_to_replay(delivery_estimate.decision_outcomes(dict(tables)), state, cut)
    if events.empty:
        moved = advance(model, state, events, cut)
    else:
        frame = training_data(spec, feature_store(settings), tables, events=events).frame
        moved = advance(model, state, frame, cut)
    published = publish(folder, champion.version, moved)
    log.info("%s v%s: offsets %s", spec.name, champion.version, published.calibration)
    return {"version": champion.version, "calibration": published.calibration, "rows": len(events)}


@task(cache_policy=NO_CACHE)
def monitor_uplift(data: MonitoredData | None = None) -> dict | None:
    """The outreach-uplift champion's observed and predicted effect and ranking on its
    newest labelled sends and holdouts, recorded beside the classifiers' quality (None
    without a champion)."""
    from models import outreach_uplift
    from training.monitor import UPLIFT_WINDOW_DAYS, measured_window, uplift_quality

    spec = outreach_uplift.SPEC
    return _champion_quality(
        spec,
        lambda events, end: measured_window(events, end, UPLIFT_WINDOW_DAYS, labelled=True),
        lambda model, frame, end, tested: uplift_quality(model, frame, end, spec.capacity, tested),
        ("observed_uplift", "predicted_uplift", "qini", "uplift_at_capacity", "rows"),
        data,
    )


@flow(name="monitor")
def monitor(models: list[str] | None = None, window_days: int = DEFAULT_WINDOW_DAYS) -> list:
    """Drift and quality of each monitored champion (default: delay risk and churn), and,
    monitoring them all, the delivery window's quality (last: a dict, or None without a
    champion or settled parcels).

    Raises:
        ValueError: A name is not a monitored model, or `window_days` is not positive.
    """
    from training.monitor import SEGMENTS

    names = list(models or SEGMENTS)
    unknown = [n for n in names if n not in SEGMENTS]
    if unknown:
        raise ValueError(f"models: {unknown} are not monitored; monitored: {sorted(SEGMENTS)}")
    if window_days < 1:
        raise ValueError(f"window_days: must be at least 1, got {window_days}")
    loading = preload()
    with report_stage("monitor: read raw data") as stage:
        data = _data(monitored_tables(models))
        stage.rows, stage.unit = data.customers, f"of {data.business_customers:,} customers"
        # The stages import what the thread may still be importing, and a module imported
        # by two threads at once can be seen half-initialised by one of them: the reading,
        # read ahead, can end before the imports do.
        loading.join()
    from features.store.duckdb_offline import entities_only

    reports = ReportWriter()
    # Each feature view is read once for the drawn customers' entities, not at each request.
    try:
        with entities_only(data.drawn_entities()):
            results = _each_stage(names, models, window_days, data, reports)
    except BaseException:
        reports.close(raise_errors=False)
        raise
    with report_stage("monitor: drift reports") as stage:
        stage.rows, stage.unit = reports.close(), "written"
    return results


def _each_stage(
    names: list[str],
    models: list[str] | None,
    window_days: int,
    data: MonitoredData,
    reports: ReportWriter,
) -> list:
    """Each model's stage in turn (see `monitor`), its drift report written by `reports`."""
    from models import REQUIRED_MODELS
    from models.served.registry import ModelUnavailableError

    results = []
    for name in names:
        with report_stage(f"monitor {name}") as stage:
            try:
                result = monitor_model(name, window_days, data, reports)
            except ModelUnavailableError as error:
                # Monitoring them all, an optional model not trained yet is left out.
                if models is not None or name in REQUIRED_MODELS:
                    raise
                log.info("%s: %s", name, error)
                stage.note = "no champion"
                continue
            stage.rows, stage.unit = len(result.table), "drift rows"
        results.append(result)
    if models is None:
        with report_stage("monitor delivery windows") as stage:
            try:
                windows = monitor_windows(window_days, data)
            except ValueError as error:
                log.warning("delivery windows: no realised quality yet: %s", error)
                windows = None
            stage.rows, stage.unit = (windows or {}).get("rows"), "parcel decisions"
        results.append(windows)
        with report_stage("update delivery-window offsets") as stage:
            # Like the monitor, a failed update leaves yesterday's offsets serving.
            try:
                offsets = update_window_offsets()
            except Exception:
                log.exception("delivery windows: offsets not updated")
                offsets = None
            stage.rows, stage.unit = (offsets or {}).get("rows"), "parcel decisions"
        with report_stage("monitor outreach uplift") as stage:
            try:
                uplift = monitor_uplift(data)
            except ValueError as error:
                log.warning("outreach uplift: no realised quality yet: %s", error)
                uplift = None
            stage.rows, stage.unit = (uplift or {}).get("rows"), "sends and holdouts"
        results.append(uplift)
    return results
