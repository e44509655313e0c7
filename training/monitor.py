"""Drift: how the newest days differ from what a champion was trained on.

For each monitored classifier (delay risk, churn) the reference window is the champion's
training window (its run's `split_train_start`..`split_train_end`), the current window the
newest `window_days` days of its decisions up to the data's end; both get their
point-in-time features the way training does, and the champion's score. Only the decisions
compared are retrieved and scored: a seeded sample of at most `reference_rows` decisions of
the training window (`AFTERSALE_MONITOR_REFERENCE_ROWS`), the newest days and the newest
labelled window, so a run's cost does not grow with the model's history. Evidently
(`DataDriftTable`) measures each feature's drift and the score's (prediction drift), with
its default test for each column's type and size and that test's threshold; the same runs
on each segment (carrier and delivery region for parcels, home region and latest contact
reason for customers) with enough rows in both windows. Evidently is used as it is: its
column tests and thresholds are documented and its HTML report is what a data scientist
opens from the MLflow run.

The raw rows behind the labels are read once per run (`monitored_data`). On a business of
more than `AFTERSALE_MONITOR_CUSTOMERS` customers they are those of a seeded draw of that
many customers (`features.contract.subset`): label events are computed from the whole
history of each model, so without the cut a run would cost as much as the business's
history, whatever the samples drawn from it afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from features.instants import utc_times
from models import churn, delay_risk, next_best_offer
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, ModelSpec

log = logging.getLogger(__name__)

SCORE = "score"
# Churn's population: customers with an earlier order (a customer feature).
ORDERS_TOTAL = "orders_total"
# Marks the customers at the data's end among the decisions read with them.
NEWEST = "__newest"
ALL = "all"
# Segments each monitored model is watched by.
SEGMENTS: dict[str, tuple[str, ...]] = {
    delay_risk.NAME: ("carrier", "destination_region"),
    churn.NAME: ("region", "last_contact_reason"),
    next_best_offer.NAME: ("category", "offer_type"),
}
# A segment is compared only with this many rows in each window.
MIN_SEGMENT_ROWS = 50
# Seed of the reference sample: the same decisions stand for a training window in every run.
REFERENCE_SEED = 0
DRIFT_COLUMNS = (
    "model",
    "segment",
    "column",
    "kind",
    "method",
    "value",
    "threshold",
    "drifted",
    "reference_rows",
    "current_rows",
    "trending",
)


@dataclass(frozen=True)
class MonitoredData:
    """The raw tables one monitor run reads, read once and shared by its stages.

    Attributes:
        tables: The contract tables, cut to the drawn customers' rows (the whole business
            when it has at most the drawn number).
        customers: Customers whose rows `tables` hold.
        business_customers: Customers of the whole business.
    """

    tables: dict
    customers: int
    business_customers: int

    def of(self, spec: ModelSpec) -> dict:
        """The tables `spec` reads (its required and, where present, its optional ones).

        Raises:
            FileNotFoundError: A table the model requires was not ingested.
        """
        missing = sorted(set(spec.raw_tables) - set(self.tables))
        if missing:
            raise FileNotFoundError(f"{spec.name}: tables {missing} not found in the raw data")
        names = (*spec.raw_tables, *spec.optional_tables)
        return {n: self.tables[n] for n in names if n in self.tables}

    def drawn_entities(self) -> dict:
        """The keys of the drawn customers and of their rows (`features.contract.subset.
        owned_keys`), for point-in-time requests about them alone
        (`features.store.duckdb_offline.entities_only`); none when no draw was made."""
        from features.contract.subset import owned_keys

        if self.customers >= self.business_customers:
            return {}
        return owned_keys(self.tables)


def monitored_data(
    folder: Path, names: Sequence[str], customers: int, seed: int = REFERENCE_SEED
) -> MonitoredData:
    """The tables `names` of the published raw folder, cut to at most `customers`
    customers drawn by `seed` (`features.contract.subset.drawn_customers`) and those whose
    rows hold each table's latest instants (`with_latest`): the cut reaches as far as the
    whole business, so its data's end, and each window's, is the business's."""
    from features.contract.io import read_validated
    from features.contract.subset import (
        customer_ids,
        drawn_customers,
        of_customers,
        with_latest,
        with_owners,
    )

    tables = read_validated(folder, tables=with_owners(list(dict.fromkeys(names))))
    everyone = customer_ids(tables)
    chosen = drawn_customers(everyone, customers, seed)
    if len(chosen) < len(everyone):
        chosen = with_latest(tables, chosen)
        tables = of_customers(tables, chosen)
        log.info("monitor: the rows of %d of %d customers", len(chosen), len(everyone))
    return MonitoredData(tables, len(chosen), len(everyone))


@dataclass(frozen=True)
class Windows:
    """The two windows compared: `reference` (training) and `current` (newest days)."""

    reference: pd.DataFrame
    current: pd.DataFrame
    reference_span: tuple[pd.Timestamp, pd.Timestamp]
    current_span: tuple[pd.Timestamp, pd.Timestamp]


def champion_span(params) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp | None]:
    """A champion's training window and the last decision it saw (stopping and calibration
    included), from its run's parameters: the served model's (`served_*`, which
    `training.binary` logs), or for a run without them its time split's training window
    and validation end."""
    start = params.get("served_train_start", params["split_train_start"])
    end = params.get("served_train_end", params["split_train_end"])
    seen = params.get("served_seen_end", params.get("split_validation_end"))
    return pd.Timestamp(start), pd.Timestamp(end), None if seen is None else pd.Timestamp(seen)


def reference_sample(
    frame: pd.DataFrame,
    keys: Sequence[str],
    train_start: pd.Timestamp,
    train_end: pd.Timestamp,
    rows: int | None,
    seed: int = REFERENCE_SEED,
) -> pd.DataFrame:
    """The decisions of the training window, at most `rows` of them (None: all), chosen at
    random by `seed` (`drawn`)."""
    times = utc_times(frame[EVENT_TIME])
    return drawn(frame[(times >= train_start) & (times <= train_end)], keys, rows, seed)


def drawn(
    frame: pd.DataFrame, keys: Sequence[str], rows: int | None, seed: int = REFERENCE_SEED
) -> pd.DataFrame:
    """At most `rows` decisions of `frame` (None: all), chosen at random by `seed`.

    Each decision (its `keys` and instant) draws a seeded hash and the `rows` smallest are
    kept, so a decision's draw does not depend on the others: sampling the label events
    before retrieval and the retrieved frame after it keeps the same decisions, and rows
    beside the sample (another window's) are left out again.
    """
    if rows is None or len(frame) <= rows:
        return frame
    # Keys as text and instants in nanoseconds: the draw is the same whatever dtypes the
    # label events or the retrieved frame carry.
    identity = pd.DataFrame({k: frame[k].astype(str).to_numpy() for k in keys})
    identity[EVENT_TIME] = (
        utc_times(frame[EVENT_TIME]).astype("datetime64[ns, UTC]").astype("int64")
    ).to_numpy()
    draws = pd.util.hash_pandas_object(
        identity, index=False, hash_key=format(seed % 16**16, "016x")
    ).to_numpy()
    chosen = np.sort(np.argsort(draws, kind="stable")[:rows])
    return frame.iloc[chosen]


def bounded_window(
    window: pd.DataFrame, keys: Sequence[str], rows: int | None, seed: int = REFERENCE_SEED
) -> pd.DataFrame:
    """At most `rows` decisions of a window (`drawn`), and its newest decision whatever
    the draw, so that the window found again in what is kept ends where it did."""
    if window.empty or rows is None or len(window) <= rows:
        return window
    times = utc_times(window[EVENT_TIME])
    kept = drawn(window, keys, rows, seed).index.append(window.index[[int(times.argmax())]])
    return window[window.index.isin(kept)]


def monitored_events(
    events: pd.DataFrame,
    keys: Sequence[str],
    train_start: pd.Timestamp,
    train_end: pd.Timestamp,
    window_days: int,
    end: pd.Timestamp,
    reference_rows: int | None,
    seed: int = REFERENCE_SEED,
) -> pd.DataFrame:
    """The label events a monitor run compares, before their features are retrieved: the
    reference sample of the training window (`reference_sample`), the newest `window_days`
    days of decisions, and the `window_days` days up to the newest decision whose label was
    known by `end` (what `realised_quality` measures), each window at most `reference_rows`
    decisions drawn as the reference is. The newest decision, and the newest with a known
    label, are kept whatever the draw: they set where the windows end."""
    times = utc_times(events[EVENT_TIME])
    span = pd.Timedelta(days=window_days)
    chosen = [reference_sample(events, keys, train_start, train_end, reference_rows, seed).index]
    if len(events):
        newest = events[(times > times.max() - span).to_numpy()]
        chosen.append(bounded_window(newest, keys, reference_rows, seed).index)
    known = (events[LABEL].notna() & (utc_times(events[LABEL_KNOWN]) <= end)).to_numpy()
    if known.any():
        last = times[known].max()
        settled = events[(known & (times > last - span) & (times <= last)).to_numpy()]
        chosen.append(bounded_window(settled, keys, reference_rows, seed).index)
    return events[events.index.isin(chosen[0].append(chosen[1:]))]


def windows(
    frame: pd.DataFrame,
    train_start: pd.Timestamp,
    train_end: pd.Timestamp,
    window_days: int,
    end: pd.Timestamp | None = None,
    current: pd.DataFrame | None = None,
    reference_rows: int | None = None,
    keys: Sequence[str] = (),
    seed: int = REFERENCE_SEED,
) -> Windows:
    """Split decisions into the training window and the newest `window_days` days (or take
    `current` as the newest decisions: a model whose labels take months has no labelled
    decision in its newest days, and is watched on the decisions made at the data's end).

    Each window is at most `reference_rows` decisions (None: all), drawn by `seed` from
    their `keys` and instants (`drawn`).

    Raises:
        ValueError: Either window holds no decision.
    """
    times = utc_times(frame[EVENT_TIME])
    reference = reference_sample(frame, keys, train_start, train_end, reference_rows, seed)
    if current is None:
        end = times.max() if end is None else end
        start = end - pd.Timedelta(days=window_days)
        current = drawn(frame[(times > start) & (times <= end)], keys, reference_rows, seed)
    else:
        newest = utc_times(current[EVENT_TIME])
        start, end = newest.min(), newest.max()
    if reference.empty or current.empty:
        raise ValueError(
            f"no decisions to compare: {len(reference)} in the training window "
            f"{train_start:%Y-%m-%d}..{train_end:%Y-%m-%d}, {len(current)} in the "
            f"{window_days} days to {end:%Y-%m-%d}"
        )
    return Windows(reference, current, (train_start, train_end), (start, end))


def _is_p_value(method: str) -> bool:
    return "p_value" in method


def _column_drift(report) -> list[dict]:
    """Each column's drift figure from an Evidently report of `DataDriftTable` (`_run`)."""
    rows = []
    columns = report.as_dict()["metrics"][0]["result"]["drift_by_columns"]
    for column, found in columns.items():
        method, threshold = str(found["stattest_name"]), float(found["stattest_threshold"])
        value = float(found["drift_score"])
        drifted = value < threshold if _is_p_value(method) else value >= threshold
        rows.append(
            {
                "column": column,
                "method": method,
                "value": value,
                "threshold": threshold,
                "drifted": bool(drifted),
            }
        )
    return rows


def _prepared(frame: pd.DataFrame, numeric, categorical) -> pd.DataFrame:
    """Numbers as floats (flags as 0/1) and categories as text, as Evidently's tests read them."""
    out = {c: pd.to_numeric(frame[c], errors="coerce").astype(np.float64) for c in numeric}
    for c in categorical:
        values = frame[c]
        out[c] = (
            values.astype(object)
            .where(values.notna(), None)
            .map(lambda v: v if v is None else str(v))
        )
    return pd.DataFrame(out, index=frame.index)


def _run(reference: pd.DataFrame, current: pd.DataFrame, numeric, categorical, ready=False):
    """Evidently's drift table (`DataDriftTable`) of the two windows, as a report whose HTML
    a data scientist opens: each column's default test, figure, verdict and distributions.
    A column with no value in either window is left out (Evidently refuses it). This is the
    drift table of Evidently's report API that builds one pass of plots; its newer
    `DataDriftPreset` measures each column three times over with its plots and took 12 s
    where this takes 2 to 4 s on the same 20,000 rows a window. `ready`: the frames are
    `_prepared` already."""
    from evidently.legacy.metrics import DataDriftTable
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    prepared = _both_prepared(reference, current, numeric, categorical, ready)

    def valued(columns) -> list[str]:
        return [c for c in columns if all(frame[c].notna().any() for frame in prepared)]

    mapping = ColumnMapping(
        target=None,
        prediction=None,
        datetime=None,
        id=None,
        numerical_features=valued(numeric),
        categorical_features=valued(categorical),
    )
    report = Report(metrics=[DataDriftTable()])
    report.run(reference_data=prepared[0], current_data=prepared[1], column_mapping=mapping)
    return report


def _both_prepared(reference, current, numeric, categorical, ready: bool):
    """Both windows as `_prepared` gives them (as they are when `ready`)."""
    if ready:
        return reference, current
    return _prepared(reference, numeric, categorical), _prepared(current, numeric, categorical)


def _values_drift(
    reference: pd.DataFrame, current: pd.DataFrame, numeric, categorical, ready=False
) -> list[dict]:
    """Each column's drift as `_column_drift` reads it from a report: Evidently's default
    test for the column's type and size (`get_stattest`) and that test's threshold, on the
    column's finite values, as its `ValueDrift` computes them. The report's per-column work
    besides the test (correlations, histograms, time plots) costs tens of milliseconds a
    column and is skipped: a segment needs its figures, not its HTML. A column with no
    value in either window has none. `ready`: the frames are `_prepared` already (a
    segment's rows of the prepared windows: each window is prepared once)."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType
    from evidently.legacy.options.data_drift import DataDriftOptions

    prepared = _both_prepared(reference, current, numeric, categorical, ready)
    options = DataDriftOptions(all_features_stattest=None, all_features_threshold=None)
    rows = []
    for column, column_type in [
        *((c, ColumnType.Numerical) for c in numeric),
        *((c, ColumnType.Categorical) for c in categorical),
    ]:
        ref, cur = (frame[column].replace([-np.inf, np.inf], np.nan).dropna() for frame in prepared)
        if ref.empty or cur.empty:
            continue
        chosen = options.get_feature_stattest_func(column, column_type.value)
        test = get_stattest(ref, cur, column_type, chosen)
        found = test(ref, cur, column_type, options.get_threshold(column, column_type.value))
        method, threshold = str(test.display_name), float(found.actual_threshold)
        value = float(found.drift_score)
        drifted = value < threshold if _is_p_value(method) else value >= threshold
        rows.append(
            {
                "column": column,
                "method": method,
                "value": value,
                "threshold": threshold,
                "drifted": bool(drifted),
            }
        )
    return rows


@dataclass(frozen=True)
class Drift:
    """One model's drift: the table (`DRIFT_COLUMNS`) and the whole-window Evidently
    report (`snapshot.save_html` writes its HTML)."""

    table: pd.DataFrame
    snapshot: object
    spans: Windows


def drift(
    name: str,
    spans: Windows,
    features: Sequence[str],
    categorical: Sequence[str],
    segments: Sequence[str] = (),
) -> Drift:
    """Feature and prediction drift of `spans.current` against `spans.reference`, on the
    whole windows and on each segment value with `MIN_SEGMENT_ROWS` rows in both.

    Both frames hold the features and the champion's `SCORE`. A segment's rows are its
    score's drift and the share of features that drifted within it (kind `share`, against
    Evidently's default drift share of one half).
    """
    categorical = [c for c in features if c in set(categorical)]
    numeric = [c for c in features if c not in set(categorical)] + [SCORE]
    reference, current = spans.reference, spans.current
    # Each window is prepared once; the segments and halves take its rows.
    ready = _both_prepared(reference, current, numeric, categorical, False)
    snapshot = _run(*ready, numeric, categorical, ready=True)
    trends = trending(reference, numeric, categorical, ready=ready[0])
    rows = [
        {
            **row,
            "model": name,
            "segment": ALL,
            "kind": "prediction" if row["column"] == SCORE else "feature",
            "reference_rows": len(reference),
            "current_rows": len(current),
            "trending": row["column"] in trends,
        }
        for row in _column_drift(snapshot)
    ]
    for column in segments:
        values = sorted(set(reference[column].dropna()) & set(current[column].dropna()))
        for value in values:
            ref = ready[0][(reference[column] == value).to_numpy()]
            cur = ready[1][(current[column] == value).to_numpy()]
            if min(len(ref), len(cur)) < MIN_SEGMENT_ROWS:
                continue
            found = _values_drift(ref, cur, numeric, categorical, ready=True)
            sizes = {"reference_rows": len(ref), "current_rows": len(cur)}
            segment = f"{column}={value}"
            for row in found:
                if row["column"] == SCORE:
                    rows.append({**row, "model": name, "segment": segment, **sizes})
                    rows[-1]["kind"] = "prediction"
            shared = [r for r in found if r["column"] != SCORE]
            share = float(np.mean([r["drifted"] for r in shared])) if shared else 0.0
            rows.append(
                {
                    "model": name,
                    "segment": segment,
                    "column": "features",
                    "kind": "share",
                    "method": "share of drifted features",
                    "value": share,
                    "threshold": 0.5,
                    "drifted": share >= 0.5,
                    **sizes,
                }
            )
    table = pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))
    return Drift(table, snapshot, spans)


def trending(
    reference: pd.DataFrame, numeric, categorical, ready: pd.DataFrame | None = None
) -> set[str]:
    """The columns that drift within the training window itself: its older half against
    its newer half, by decision time, with the same tests. Such a feature (a tenure, a count
    since sign-up, the month) or score (on a growing business) moves with time on any data,
    so its drift in the newest days says little about the model; the retraining rule leaves
    such features out of the drifted share, and such a score's drift marks nothing alone.
    Empty when either half has fewer than `MIN_SEGMENT_ROWS` rows. `ready`: `reference`
    as `_prepared` gives it, where the caller has it."""
    times = utc_times(reference[EVENT_TIME])
    middle = times.sort_values().iloc[len(times) // 2] if len(times) else None
    if ready is None:
        ready = _prepared(reference, numeric, categorical)
    before = (times < middle).to_numpy()
    older, newer = ready[before], ready[~before]
    if min(len(older), len(newer)) < MIN_SEGMENT_ROWS:
        return set()
    found = _values_drift(older, newer, numeric, categorical, ready=True)
    return {row["column"] for row in found if row["drifted"]}


def customers_as_of(features_dir: Path, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every customer who has ordered, with their latest customer features at or before
    `as_of` (the rows batch scoring reads) and the decision-time features of that instant."""
    from features.build.derived import add_time_features
    from features.repo.customer_views import customer_snapshots
    from features.store.latest import latest_rows

    table = features_dir / "current" / customer_snapshots.name
    snapshots = latest_rows(table, "customer_id", as_of)
    ordered = snapshots[snapshots[ORDERS_TOTAL].fillna(0) > 0].reset_index(drop=True)
    return add_time_features(ordered, as_of)


def customers_at(
    tables, as_of: pd.Timestamp, rows: int | None = None, seed: int = REFERENCE_SEED
) -> pd.DataFrame:
    """The customers of `tables` signed up by `as_of`, each as a decision at `as_of`: at
    most `rows` of them, drawn as the reference is (`drawn`). A model whose labels take
    months (churn) is watched on these: its newest decisions, made at the data's end."""
    customers = tables["customers"].select(["customer_id", "signup_ts"]).to_pandas()
    signed = customers[(utc_times(customers["signup_ts"]) <= as_of).to_numpy()]
    asked = pd.DataFrame({"customer_id": signed["customer_id"].astype(str).to_numpy()})
    asked[EVENT_TIME] = pd.Series(as_of, index=asked.index, dtype="datetime64[ns, UTC]")
    return drawn(asked, ["customer_id"], rows, seed).reset_index(drop=True)


class Monitored(NamedTuple):
    """Decisions with their features and score (`monitored_frame`)."""

    frame: pd.DataFrame
    features: list[str]
    current: pd.DataFrame | None = None


def monitored_frame(
    spec: ModelSpec,
    store,
    tables,
    model,
    events: pd.DataFrame | None = None,
    retrieved: pd.DataFrame | None = None,
    current: pd.DataFrame | None = None,
) -> Monitored:
    """The decisions of `spec` (`events`, e.g. `monitored_events`; None: every one) with
    their point-in-time features and `model`'s score.

    Args:
        spec, store, tables, model: The model, the Feast store, the raw tables, the champion.
        events: The decisions.
        retrieved: An offer model's `events` with their features, read already (e.g. along
            the policy's valuation).
        current: Customers at the data's end (`customers_at`), read in the same store scan
            as `events` and returned apart (`Monitored.current`): those who have ordered,
            the population churn is trained on.
    """
    from models.spec import Kind
    from training.data import training_data

    if spec.kind == Kind.POLICY:
        # Offers: the logged offer of each decision, with the features its policy reads.
        from training.policy import offer_feature_names, offer_features

        if retrieved is not None:
            frame, features = retrieved.copy(), offer_feature_names(spec, store)
        else:
            logged = spec.label_events(dict(tables)) if events is None else events
            frame, features = offer_features(spec, store, logged.reset_index(drop=True))
        frame[SCORE] = model.predict_proba(frame)
        return Monitored(frame, read_by(model, [f for f in features if f in frame.columns]))
    if current is not None:
        events = spec.label_events(dict(tables)) if events is None else events
        # The decisions keep their labels' types once the unlabelled customers are apart.
        kinds = events[[LABEL, LABEL_KNOWN]].dtypes.to_dict()
        unlabelled = {
            LABEL: np.nan,
            LABEL_KNOWN: pd.Series(pd.NaT, index=current.index, dtype="datetime64[ns, UTC]"),
            NEWEST: True,
        }
        events = pd.concat(
            [events.assign(**{NEWEST: False}), current.assign(**unlabelled)], ignore_index=True
        )
    data = training_data(spec, store, tables, events)
    frame = data.frame
    frame[SCORE] = model.predict_proba(frame)
    features = read_by(model, data.features)
    if current is None:
        return Monitored(frame, features)
    newest = frame.pop(NEWEST).astype(bool).to_numpy()
    now = frame[newest]
    now = now[(now[ORDERS_TOTAL].fillna(0) > 0).to_numpy()]
    decisions = frame[~newest].reset_index(drop=True).astype(kinds)
    return Monitored(decisions, features, now.reset_index(drop=True))


def read_by(model, features) -> list[str]:
    """Those of `features` that `model` reads, in their order: a champion trained before a
    feature was added is not watched on it (its drift would not move the champion's scores,
    and would count towards the share of drifted features that marks it for retraining)."""
    inputs = set(model.features)
    return [f for f in features if f in inputs]


def report_path(folder: Path, name: str) -> Path:
    """Where `save_html` writes the report of model `name`."""
    return folder / f"drift_{name}.html"


def save_html(result: Drift, folder: Path, name: str) -> Path:
    """The whole-window Evidently report as one HTML file (`report_path`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = report_path(folder, name)
    result.snapshot.save_html(str(path))
    return path


QUALITY_COLUMNS = (
    "model",
    "window_start",
    "window_end",
    "rows",
    "positive_rate",
    "roc_auc",
    "estimated_roc_auc",
    "ece",
    "test_roc_auc",
    "test_ece",
)


def newest_window(
    decided: pd.DataFrame, window_days: int
) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """The decisions of the `window_days` days up to the latest of `decided` (decisions whose
    outcome is known), with the window's start and its last decision's instant."""
    times = utc_times(decided[EVENT_TIME])
    last = times.max()
    start = last - pd.Timedelta(days=window_days)
    return decided[times > start].reset_index(drop=True), start, last


def measured_window(
    decided: pd.DataFrame, end: pd.Timestamp, window_days: int, labelled: bool = False
) -> pd.DataFrame:
    """The decisions a champion's realised quality is measured on: those whose outcome was
    known by `end` (with a label, where `labelled`), in the `window_days` days up to the
    latest of them; empty when none is. Label events need no features for this, so the
    monitor retrieves features for these rows only, whatever the length of the history."""
    known = utc_times(decided[LABEL_KNOWN]) <= end
    if labelled:
        known &= decided[LABEL].notna()
    settled = decided[known]
    if settled.empty:
        return settled.reset_index(drop=True)
    return newest_window(settled, window_days)[0]


def realised_quality(
    name: str,
    frame: pd.DataFrame,
    end: pd.Timestamp,
    window_days: int,
    capacity: float,
    tested: dict[str, float] | None = None,
    rows: int | None = None,
    keys: Sequence[str] = (),
    seed: int = REFERENCE_SEED,
    seen_end: pd.Timestamp | None = None,
) -> dict[str, object]:
    """The champion's AUC and calibration error (ECE) on its newest labelled window: the
    decisions of the `window_days` days up to the latest one whose label was known by `end`
    (at most `rows` of them, drawn as `drawn` does), beside the figures of its own test
    window (`tested`: its run's metrics). Only decisions after `seen_end`, the last the
    champion learned from, stopped or calibrated on, are measured: on those it has seen, its
    quality would be its fit's.

    Raises:
        ValueError: No decision new to the champion has a label known by `end`.
    """
    from training.evaluate import binary_metrics

    known = utc_times(frame[LABEL_KNOWN])
    chosen = frame[LABEL].notna() & (known <= end)
    if seen_end is not None:
        chosen &= utc_times(frame[EVENT_TIME]) > seen_end
    labelled = frame[chosen]
    if labelled.empty:
        after = "" if seen_end is None else f" after its last seen, {seen_end:%Y-%m-%d}"
        raise ValueError(f"{name}: no decision{after} has a label known by {end:%Y-%m-%d}")
    window, start, last = newest_window(labelled, window_days)
    window = drawn(window, keys, rows, seed)
    metrics = binary_metrics(window[LABEL].to_numpy(), window[SCORE].to_numpy(), capacity)
    tested = tested or {}
    return {
        "model": name,
        "window_start": start,
        "window_end": last,
        "rows": int(metrics["rows"]),
        "positive_rate": metrics["positive_rate"],
        "roc_auc": metrics["roc_auc"],
        # What the labels' absence would have let us say of the same window.
        "estimated_roc_auc": estimated_auc(window[SCORE].to_numpy()),
        "ece": metrics["ece"],
        "test_roc_auc": tested.get("test_roc_auc", float("nan")),
        "test_ece": tested.get("test_ece", float("nan")),
    }


class PolicyQuality(NamedTuple):
    """The offer policy's realised figures, and the decisions read along (`read_along`)."""

    figures: dict[str, float]
    read_along: tuple[pd.DataFrame, ...]


def offer_policy_quality(
    model,
    spec: ModelSpec,
    store,
    tables,
    end: pd.Timestamp,
    window_days: int,
    train_span: tuple[pd.Timestamp, pd.Timestamp],
    tested: dict[str, float] | None = None,
    events: pd.DataFrame | None = None,
    max_decisions: int | None = None,
    read_along: Sequence[pd.DataFrame] = (),
) -> PolicyQuality:
    """The served offer policy's value per decision on the newest labelled window (the
    offers of the `window_days` days up to the latest whose 7-day window closed by `end`),
    estimated off-policy from the logged offers as training values it on its test window
    (`training.policy.value_policies`), beside the popularity policy, random offers, the
    logging policy's own mean reward and the champion's test value (`tested`). With
    `max_decisions`, a seeded uniform sample of at most that many of the window's decisions
    is valued, so a run's cost does not grow with the business (the interval widens).

    Args:
        model: The champion acceptance model.
        spec: Its declaration.
        store: Feast store for the candidates' features.
        tables: Raw tables.
        end: The data's end.
        window_days: Days of the newest window.
        train_span: The champion's training window: its actions are the action space.
        tested: The champion's run metrics.
        events: The offer decisions (`next_best_offer.label_events` of `tables`), where the
            caller has them already; None reads them from `tables`.
        read_along: Other offer decisions, read with the valued ones' (`value_policies`)
            and returned with their features (`offer_features` of each).

    Raises:
        ValueError: No offer decision has its outcome known by `end`.
    """
    from models.policies import offers as offer_policy
    from training.policy import value_policies

    if events is None:
        events = next_best_offer.label_events(dict(tables))
    known = utc_times(events[LABEL_KNOWN]) <= end
    if not known.any():
        raise ValueError(f"{spec.name}: no offer has an outcome known by {end:%Y-%m-%d}")
    window, start, last = newest_window(events[known], window_days)
    times = utc_times(events[EVENT_TIME])
    trained = events[(times >= train_span[0]) & (times <= train_span[1])]
    catalogue = next_best_offer.Catalogue.of(tables)
    actions = next_best_offer.action_space(trained, catalogue)
    ranking = offer_policy.best_sellers(tables, start)
    limit = {} if max_decisions is None else {"max_decisions": max_decisions}
    valuation = value_policies(
        model,
        spec,
        store,
        tables,
        catalogue,
        actions,
        window,
        ranking,
        **limit,
        read_along=read_along,
    )
    served = valuation.values["model"]
    low, high = served.interval("dr")
    tested = tested or {}
    figures = {
        "policy_window_start": start,
        "policy_window_end": last,
        "policy_rows": len(valuation.decisions),
        "policy_value_dr": served.dr,
        "policy_value_dr_low": low,
        "policy_value_dr_high": high,
        "policy_popularity_dr": valuation.values["popularity"].dr,
        "policy_random_dr": valuation.values["random"].dr,
        "policy_logging_mean": valuation.on_policy[0],
        "test_policy_value_dr": tested.get("test_policy_value_dr", float("nan")),
        "test_policy_logging_mean": tested.get("test_policy_logging_mean", float("nan")),
    }
    return PolicyQuality(figures, valuation.read_along)


def retrain_reasons(
    table: pd.DataFrame,
    quality: dict[str, object] | None,
    drift_share: float,
    auc_drop: float,
    ece_rise: float = float("inf"),
    estimated: float | None = None,
    estimated_before: float | None = None,
) -> list[str]:
    """Why a champion should be retrained, from its drift table and realised quality (none:
    keep it): the score drifted on the whole window (unless it trends within the training
    window itself, `trending`) and, where the AUC `estimated` from the newest days' scores
    before their labels (`estimated_auc`) and the same estimate on the training window's
    decisions (`estimated_before`) are given, the first fell `auc_drop` or more below the
    second; the share of
    drifted features (of those that do not trend within the training window, `trending`)
    reached `drift_share`; the realised AUC fell `auc_drop` or more below the test AUC; or
    the realised calibration error (ECE) rose `ece_rise` or more above the test ECE (the
    scores still rank, but no longer mean what they say: acceptance moved after a price
    change)."""
    reasons = []
    whole = table[table["segment"] == ALL]
    prediction = whole[whole["kind"] == "prediction"]
    if len(prediction) and bool(prediction["drifted"].iloc[0]):
        row = prediction.iloc[0]
        drifted = (
            f"its score drifted ({row['method']} {row['value']:.3g}, threshold "
            f"{row['threshold']:.3g})"
        )
        judged = (
            estimated is not None
            and estimated_before is not None
            and np.isfinite(estimated)
            and np.isfinite(estimated_before)
        )
        # A score that already moves between the halves of the training window (a growing
        # business, a season) drifts on any newer days: that alone marks nothing; its
        # realised quality and the estimate before labels say whether it still holds.
        if bool(row.get("trending", False)):
            pass
        elif not judged:
            reasons.append(drifted)
        elif estimated_before - estimated >= auc_drop:
            # A moved score is a reason only where the model is expected to rank worse for
            # it: scores that move with the business while still ranking well (an ageing,
            # growing customer base) need no new model. Both estimates are read the same way
            # (from scores alone), so the comparison holds whatever the model's calibration.
            reasons.append(
                f"{drifted} and the AUC estimated from its newest scores {estimated:.3f} "
                f"fell below the same estimate on its training window {estimated_before:.3f} "
                f"by {auc_drop} or more"
            )
    features = whole[whole["kind"] == "feature"]
    # Features that trend within the training window drift on any newer data: left out.
    moving = features["trending"].eq(True) if "trending" in features else None
    steady = features if moving is None else features[~moving]
    share = float(steady["drifted"].mean()) if len(steady) else 0.0
    if share >= drift_share:
        left_out = (
            ""
            if moving is None or not moving.any()
            else (f", leaving out {int(moving.sum())} that trend within its training window")
        )
        reasons.append(
            f"{share:.0%} of its features drifted (threshold {drift_share:.0%}{left_out})"
        )
    if quality is not None:
        realised, tested = float(quality["roc_auc"]), float(quality["test_roc_auc"])
        if np.isfinite(realised) and np.isfinite(tested) and tested - realised >= auc_drop:
            reasons.append(
                f"its realised AUC {realised:.3f} fell below its test AUC {tested:.3f} by "
                f"{auc_drop} or more"
            )
        realised, tested = float(quality["ece"]), float(quality.get("test_ece", float("nan")))
        if np.isfinite(realised) and np.isfinite(tested) and realised - tested >= ece_rise:
            reasons.append(
                f"its realised calibration error {realised:.3f} rose above its test "
                f"calibration error {tested:.3f} by {ece_rise} or more"
            )
    return reasons


def estimated_auc(probabilities: np.ndarray) -> float:
    """ROC AUC estimated without labels from calibrated probabilities (confidence-based
    performance estimation, CBPE: Kivimäki et al., as NannyML implements it).

    Each row counts as a positive with weight p and as a negative with weight 1 - p; the
    expected true- and false-positive rates at each threshold trace the expected ROC curve.
    NannyML itself does not resolve beside this project's pinned libraries, and the method
    is these few lines. It holds while the model stays calibrated on the new rows: it
    estimates how well the scores rank under their own probabilities, not a shift in the
    relation between features and labels.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    if len(p) == 0:
        return float("nan")
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    # Rows of equal score cross the threshold together.
    last_of_tie = np.r_[sorted_p[1:] != sorted_p[:-1], True]
    tp = np.cumsum(sorted_p)[last_of_tie]
    fp = np.cumsum(1.0 - sorted_p)[last_of_tie]
    positives, negatives = tp[-1], fp[-1]
    if positives <= 0 or negatives <= 0:
        return float("nan")
    tpr = np.r_[0.0, tp / positives]
    fpr = np.r_[0.0, fp / negatives]
    return float(np.trapezoid(tpr, fpr))


def window_quality(
    model,
    frame: pd.DataFrame,
    end: pd.Timestamp,
    window_days: int,
    tested: dict[str, float] | None = None,
) -> dict[str, object]:
    """The delivery-window champion on its newest labelled window (parcel decisions whose
    outcome was settled by `end`, in the `window_days` days up to the latest of them): its
    MAE in days, the coverage of its window and the window's median width, in the
    customer's local dates as training measures them, beside its own test figures.

    Raises:
        ValueError: No decision's outcome was settled by `end`.
    """
    from models.delivery_estimate import DELIVERED, TIMEZONE
    from models.served.window import local_dates
    from training.delivery import measure, window_dates

    rows = measured_window(frame, end, window_days)
    if rows.empty:
        raise ValueError(f"delivery_estimate: no parcel's outcome settled by {end:%Y-%m-%d}")
    rows, start, last = newest_window(rows, window_days)
    actual = local_dates(rows[DELIVERED], rows[TIMEZONE])
    measured = measure(actual, window_dates(model, rows))
    tested = tested or {}
    return {
        "model": "delivery_estimate",
        "window_start": start,
        "window_end": last,
        "rows": int(measured["rows"]),
        "mae_days": measured["mae_days"],
        "coverage": measured["coverage"],
        "median_width_days": measured["median_width_days"],
        "test_mae_days": tested.get("test_mae_days", float("nan")),
        "test_coverage": tested.get("test_coverage", float("nan")),
    }


# The uplift is measured on a longer window than the other models: a tenth of the actions is
# held out, so 28 days hold too few held-out rows to tell an effect from noise.
UPLIFT_WINDOW_DAYS = 91


def uplift_quality(
    model,
    frame: pd.DataFrame,
    end: pd.Timestamp,
    capacity: float,
    tested: dict[str, float] | None = None,
    window_days: int = UPLIFT_WINDOW_DAYS,
) -> dict[str, object]:
    """The outreach-uplift champion on its newest labelled window (logged sends and holdouts
    whose 90-day outcome was known by `end`, in the `window_days` days up to the latest of
    them): the effect observed on the holdouts (sent less held out, with a 90% interval) beside
    the mean effect the champion predicted for the same rows, and how well its predictions
    rank (the Qini and the uplift among the top `capacity` share), beside its own test figures.

    Raises:
        ValueError: No logged row's outcome was known by `end`, or the window lacks an arm.
    """
    from models.outreach_uplift import ACTION, TREATED
    from training.uplift_metrics import arm_difference, arm_weights, uplift_metrics

    rows = measured_window(frame, end, window_days, labelled=True)
    if rows.empty:
        raise ValueError(f"outreach_uplift: no outcome known by {end:%Y-%m-%d}")
    rows, start, last = newest_window(rows, window_days)
    predicted = model.predict(rows)
    rows = rows[np.isfinite(predicted)].reset_index(drop=True)
    predicted = predicted[np.isfinite(predicted)]
    treated = rows[TREATED].astype(bool).to_numpy()
    if treated.all() or not treated.any():
        raise ValueError(f"outreach_uplift: the window to {last:%Y-%m-%d} lacks an arm")
    y = rows[LABEL].to_numpy(np.float64)
    weight = arm_weights(treated, rows[ACTION].to_numpy())
    ranked = uplift_metrics(predicted, y, treated, weight, capacity)
    effect, low, high = arm_difference(y, treated)
    tested = tested or {}
    return {
        "model": "outreach_uplift",
        "window_start": start,
        "window_end": last,
        "rows": len(rows),
        "held_out_rows": int((~treated).sum()),
        "observed_uplift": effect,
        "observed_uplift_low": low,
        "observed_uplift_high": high,
        "predicted_uplift": float(predicted.mean()),
        "qini": ranked["qini"],
        "uplift_at_capacity": ranked["uplift_at_capacity"],
        "test_qini": tested.get("test_qini", float("nan")),
    }


def latest_status(folder: Path) -> pd.DataFrame:
    """Each model's latest monitor run, for the report's model cards: its version, when it
    ran, the realised quality (AUC, estimated AUC; for the delivery window MAE and coverage),
    the share of drifted features, and the retrain mark's reason ("" without one). Empty
    when the monitor never ran."""
    import pyarrow.parquet as pq

    from models.served.retrain import read_marks

    quality_path, drift_path = folder / "quality.parquet", folder / "drift.parquet"
    if not quality_path.is_file() and not drift_path.is_file():
        return pd.DataFrame()
    rows: dict[str, dict] = {}
    if quality_path.is_file():
        quality = pq.read_table(quality_path).to_pandas().sort_values("monitored_ts")
        for model, last in quality.groupby("model").tail(1).set_index("model").iterrows():
            rows[model] = last.to_dict()
    if drift_path.is_file():
        drift = pq.read_table(drift_path).to_pandas()
        for model, runs in drift.groupby("model"):
            newest = runs[runs["monitored_ts"] == runs["monitored_ts"].max()]
            features = newest[(newest["segment"] == ALL) & (newest["kind"] == "feature")]
            entry = rows.setdefault(model, {"version": newest["version"].iloc[0]})
            entry.setdefault("monitored_ts", newest["monitored_ts"].iloc[0])
            entry["drifted_feature_share"] = float(features["drifted"].mean())
    marks = read_marks(folder)
    out = pd.DataFrame.from_dict(rows, orient="index").rename_axis("model").reset_index()
    out["retrain_due"] = out["model"].map(lambda m: marks.get(m, {}).get("reason", ""))
    return out
