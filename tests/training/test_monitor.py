"""Drift as `training.monitor` measures it, held to the figures computed independently, on
windows with a planted shift: the shifted feature and segment are flagged, the rest not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from models.spec import EVENT_TIME
from training.monitor import ALL, SCORE, drift, windows

TRAIN_START = pd.Timestamp("2025-01-01", tz="UTC")
TRAIN_END = pd.Timestamp("2025-06-30", tz="UTC")


def _frame(rng, n: int, start: str, days: int, shift: float = 0.0, slow: str = "") -> pd.DataFrame:
    carrier = rng.choice(["fast", "slow", "mid"], n)
    late = rng.normal(0.0, 1.0, n) + shift
    # A carrier that slows down: its parcels' hours in transit and scores move.
    hours = rng.gamma(4.0, 12.0, n) + np.where(carrier == slow, 30.0, 0.0)
    return pd.DataFrame(
        {
            EVENT_TIME: pd.Timestamp(start, tz="UTC")
            + pd.to_timedelta(rng.uniform(0, days, n), unit="D"),
            "lane_late_rate": late,
            "hours_in_transit": hours,
            "express": rng.random(n) < 0.3,
            "carrier": carrier,
            "service_level": rng.choice(["economy", "standard", "express"], n, p=[0.2, 0.5, 0.3]),
            SCORE: 1 / (1 + np.exp(-(hours - 48) / 20)),
        }
    )


@pytest.fixture
def spans():
    rng = np.random.default_rng(3)
    reference = _frame(rng, 4000, "2025-01-01", 180)
    current = _frame(rng, 1500, "2025-11-03", 28, shift=0.0, slow="slow")
    # The service level mix changes too.
    current["service_level"] = rng.choice(
        ["economy", "standard", "express"], 1500, p=[0.6, 0.3, 0.1]
    )
    return windows(pd.concat([reference, current], ignore_index=True), TRAIN_START, TRAIN_END, 28)


FEATURES = ["lane_late_rate", "hours_in_transit", "express", "carrier", "service_level"]
CATEGORICAL = ["carrier", "service_level"]


def test_windows_are_the_training_window_and_the_newest_days(spans) -> None:
    times = pd.to_datetime(spans.reference[EVENT_TIME], utc=True)
    assert times.min() >= TRAIN_START
    assert times.max() <= TRAIN_END
    newest = pd.to_datetime(spans.current[EVENT_TIME], utc=True)
    assert newest.min() > spans.current_span[1] - pd.Timedelta(days=28)
    assert len(spans.current) == 1500


def test_drift_flags_the_shift_and_agrees_with_its_definition(spans) -> None:
    result = drift("delay_risk", spans, FEATURES, CATEGORICAL, segments=("carrier",))
    table = result.table
    whole = table[table["segment"] == ALL].set_index("column")
    assert set(whole.index) == {*FEATURES, SCORE}
    assert bool(whole.loc["hours_in_transit", "drifted"])
    assert bool(whole.loc["service_level", "drifted"])
    assert not bool(whole.loc["lane_late_rate", "drifted"])
    assert whole.loc[SCORE, "kind"] == "prediction"
    # Wasserstein distance normed by the reference's spread, as the method says.
    row = whole.loc["hours_in_transit"]
    assert row["method"].startswith("Wasserstein")
    ref = spans.reference["hours_in_transit"].to_numpy()
    cur = spans.current["hours_in_transit"].to_numpy()
    expected = wasserstein_distance(ref, cur) / np.std(ref)
    assert row["value"] == pytest.approx(expected, rel=1e-6)
    # Jensen-Shannon distance of the category shares.
    row = whole.loc["service_level"]
    assert row["method"].startswith("Jensen-Shannon")
    levels = sorted(set(spans.reference["service_level"]) | set(spans.current["service_level"]))
    shares = [
        spans.reference["service_level"].value_counts(normalize=True).reindex(levels, fill_value=0),
        spans.current["service_level"].value_counts(normalize=True).reindex(levels, fill_value=0),
    ]
    assert row["value"] == pytest.approx(jensenshannon(*shares), rel=1e-3)
    # Every verdict follows its figure and threshold.
    for r in table.itertuples():
        crossed = r.value < r.threshold if "p_value" in r.method else r.value >= r.threshold
        if r.kind != "share":
            assert r.drifted == crossed, r


def test_drift_names_the_segment_that_moved(spans) -> None:
    table = drift("delay_risk", spans, FEATURES, CATEGORICAL, segments=("carrier",)).table
    scores = table[(table["kind"] == "prediction") & (table["segment"] != ALL)]
    scores = scores.set_index("segment")
    assert bool(scores.loc["carrier=slow", "drifted"])
    assert not bool(scores.loc["carrier=fast", "drifted"])
    assert not bool(scores.loc["carrier=mid", "drifted"])
    assert (scores["reference_rows"] >= 50).all()


@pytest.mark.parametrize("rows", ["segment", "small"])
def test_segment_drift_is_what_the_report_measures(spans, rows) -> None:
    """Segments are measured without building a report: the same test, figure and verdict
    per column as Evidently's `DataDriftTable` report gives on the same rows, whichever test the
    windows' size selects (a segment of over 1,000 reference rows; 300 rows each)."""
    from training.monitor import _column_drift, _run, _values_drift

    numeric = ["lane_late_rate", "hours_in_transit", "express", SCORE]
    if rows == "segment":
        reference = spans.reference[spans.reference["carrier"] == "slow"]
        current = spans.current[spans.current["carrier"] == "slow"]
    else:
        reference, current = spans.reference.head(300), spans.current.head(300)
    reported = _column_drift(_run(reference, current, numeric, CATEGORICAL))
    measured = _values_drift(reference, current, numeric, CATEGORICAL)
    by_column = {row["column"]: row for row in reported}
    assert set(by_column) == {row["column"] for row in measured} == {*numeric, *CATEGORICAL}
    if rows == "small":
        assert {row["method"].split()[0] for row in measured} >= {"K-S", "chi-square"}
    for row in measured:
        expected = by_column[row["column"]]
        assert row["method"] == expected["method"]
        assert row["threshold"] == expected["threshold"]
        assert row["value"] == pytest.approx(expected["value"], rel=1e-9, abs=1e-12)
        assert row["drifted"] == expected["drifted"]


def _events(rng, n: int) -> pd.DataFrame:
    from models.spec import LABEL, LABEL_KNOWN

    times = pd.Timestamp("2024-10-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 420, n), "D")
    return pd.DataFrame(
        {
            "customer_id": [f"c{i % 900}" for i in range(n)],
            EVENT_TIME: times,
            LABEL: rng.integers(0, 2, n).astype(float),
            LABEL_KNOWN: times + pd.Timedelta(days=30),
        }
    )


def test_the_reference_is_a_bounded_seeded_sample_of_the_training_window() -> None:
    from training.monitor import reference_sample

    events = _events(np.random.default_rng(2), 6000)
    keys = ["customer_id"]
    inside = events[events[EVENT_TIME].between(TRAIN_START, TRAIN_END)]
    sample = reference_sample(events, keys, TRAIN_START, TRAIN_END, 500, seed=1)
    assert len(sample) == 500 < len(inside)
    assert sample.index.isin(inside.index).all()
    assert not sample.index.duplicated().any()
    again = reference_sample(events, keys, TRAIN_START, TRAIN_END, 500, seed=1)
    pd.testing.assert_frame_equal(sample, again)
    other = reference_sample(events, keys, TRAIN_START, TRAIN_END, 500, seed=2)
    assert len(other) == 500
    assert not sample.index.equals(other.index)
    # Drawn again from the retrieved frame (the sample beside other rows of the window,
    # instants in another resolution, in another order), the same decisions are kept.
    retrieved = pd.concat([sample, inside.drop(sample.index)[:300]]).sample(frac=1, random_state=0)
    retrieved[EVENT_TIME] = retrieved[EVENT_TIME].astype("datetime64[ns, UTC]")
    redrawn = reference_sample(retrieved, keys, TRAIN_START, TRAIN_END, 500, seed=1)
    assert sorted(redrawn.index) == sorted(sample.index)
    # A window within the bound is kept whole.
    whole = reference_sample(events, keys, TRAIN_START, TRAIN_END, len(inside), seed=1)
    pd.testing.assert_frame_equal(whole, inside)


def test_only_the_compared_decisions_are_retrieved() -> None:
    """The reference sample, the newest days and the newest labelled window: the windows
    and the realised quality come out as they do from every decision."""
    from models.spec import LABEL_KNOWN
    from training.monitor import monitored_events, realised_quality

    rng = np.random.default_rng(4)
    events = _events(rng, 6000)
    events[SCORE] = rng.uniform(0, 1, len(events))
    end = pd.Timestamp("2025-11-01", tz="UTC")
    kept = monitored_events(events, ["customer_id"], TRAIN_START, TRAIN_END, 28, end, 500)
    assert len(kept) < len(events)
    full = windows(events, TRAIN_START, TRAIN_END, 28, reference_rows=500, keys=["customer_id"])
    cut = windows(kept, TRAIN_START, TRAIN_END, 28, reference_rows=500, keys=["customer_id"])
    pd.testing.assert_frame_equal(cut.reference, full.reference)
    pd.testing.assert_frame_equal(cut.current, full.current)
    assert cut.current_span == full.current_span
    assert len(cut.reference) == 500
    assert (pd.to_datetime(events[LABEL_KNOWN]) > end).any()
    tested = {"test_roc_auc": 0.7, "test_ece": 0.02}
    assert realised_quality("churn", kept, end, 28, 0.1, tested) == realised_quality(
        "churn", events, end, 28, 0.1, tested
    )


@pytest.mark.parametrize("rows", [40, 150])
def test_each_compared_window_is_a_bounded_draw_kept_through_retrieval(rows: int) -> None:
    """With a bound below the windows' sizes, each window is a seeded draw of at most that
    many decisions, and the windows and the realised quality from the events kept for
    retrieval are those drawn from every decision."""
    from models.spec import LABEL_KNOWN
    from training.monitor import monitored_events, realised_quality

    rng = np.random.default_rng(6)
    events = _events(rng, 20000)
    events[SCORE] = rng.uniform(0, 1, len(events))
    end = pd.Timestamp("2025-11-01", tz="UTC")
    keys = ["customer_id"]
    kept = monitored_events(events, keys, TRAIN_START, TRAIN_END, 28, end, rows)
    # Three windows of at most `rows`, and the newest decisions that bound two of them.
    assert len(kept) <= 3 * rows + 2
    full = windows(events, TRAIN_START, TRAIN_END, 28, reference_rows=rows, keys=keys)
    cut = windows(kept, TRAIN_START, TRAIN_END, 28, reference_rows=rows, keys=keys)
    assert len(full.current) == rows
    pd.testing.assert_frame_equal(cut.current, full.current)
    pd.testing.assert_frame_equal(cut.reference, full.reference)
    assert cut.current_span == full.current_span
    assert (pd.to_datetime(events[LABEL_KNOWN]) > end).any()
    tested = {"test_roc_auc": 0.7, "test_ece": 0.02}
    every = realised_quality("churn", events, end, 28, 0.1, tested, rows=rows, keys=keys)
    assert every["rows"] == rows
    assert realised_quality("churn", kept, end, 28, 0.1, tested, rows=rows, keys=keys) == every
    # Unbounded, the whole window is measured.
    assert realised_quality("churn", events, end, 28, 0.1)["rows"] > rows


def test_a_bounded_window_is_a_draw_that_ends_where_the_window_ends() -> None:
    from training.monitor import bounded_window, drawn, newest_window

    events = _events(np.random.default_rng(8), 3000)
    window, _, last = newest_window(events, 400)
    assert len(window) > 200
    kept = bounded_window(window, ["customer_id"], 200)
    assert 200 <= len(kept) <= 201
    assert kept.index.isin(window.index).all()
    assert newest_window(kept, 400)[2] == last
    assert drawn(window, ["customer_id"], 200).index.isin(kept.index).all()
    pd.testing.assert_frame_equal(bounded_window(window, ["customer_id"], 200), kept)
    pd.testing.assert_frame_equal(bounded_window(window, ["customer_id"], len(window)), window)


def test_empty_windows_are_a_named_error() -> None:
    rng = np.random.default_rng(1)
    frame = _frame(rng, 100, "2025-01-01", 30)
    with pytest.raises(ValueError, match="no decisions to compare"):
        windows(frame, TRAIN_START + pd.Timedelta(days=400), TRAIN_END + pd.Timedelta(days=500), 28)


def test_realised_quality_is_measured_on_the_newest_labelled_window() -> None:
    from sklearn.metrics import roc_auc_score

    from models.spec import LABEL, LABEL_KNOWN
    from training.monitor import realised_quality

    rng = np.random.default_rng(5)
    n = 3000
    times = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 300, n), "D")
    score = rng.uniform(0, 1, n)
    label = (rng.uniform(0, 1, n) < score).astype(float)
    frame = pd.DataFrame(
        {
            EVENT_TIME: times,
            SCORE: score,
            LABEL: label,
            # Labels become known 30 days after the decision.
            LABEL_KNOWN: times + pd.Timedelta(days=30),
        }
    )
    end = pd.Timestamp("2025-09-01", tz="UTC")
    quality = realised_quality("churn", frame, end, 28, 0.1, {"test_roc_auc": 0.7})
    # Independently: labels known by the end, then the 28 days up to the latest of them.
    known = frame[frame[LABEL_KNOWN] <= end]
    last = known[EVENT_TIME].max()
    window = known[known[EVENT_TIME] > last - pd.Timedelta(days=28)]
    assert quality["window_end"] == last
    assert quality["rows"] == len(window)
    assert quality["roc_auc"] == pytest.approx(roc_auc_score(window[LABEL], window[SCORE]))
    assert quality["test_roc_auc"] == 0.7
    assert 0 <= quality["ece"] < 0.1
    with pytest.raises(ValueError, match="no decision has a label known"):
        realised_quality("churn", frame, pd.Timestamp("2024-01-01", tz="UTC"), 28, 0.1)
    # A champion that saw decisions up to a day (fitted through newer labels) is measured
    # only on those after it: within the window, and none when it saw them all.
    seen = last - pd.Timedelta(days=10)
    fresh = window[window[EVENT_TIME] > seen]
    after = realised_quality("churn", frame, end, 28, 0.1, seen_end=seen)
    assert after["rows"] == len(fresh) > 0
    assert after["roc_auc"] == pytest.approx(roc_auc_score(fresh[LABEL], fresh[SCORE]))
    with pytest.raises(ValueError, match="no decision after its last seen, 2025-08-0"):
        realised_quality("churn", frame, end, 28, 0.1, seen_end=last)


def _table(prediction_drifted: bool, drifted_features: int, features: int = 10) -> pd.DataFrame:
    rows = [
        {
            "segment": ALL,
            "column": SCORE,
            "kind": "prediction",
            "method": "K-S p_value",
            "value": 0.01 if prediction_drifted else 0.4,
            "threshold": 0.05,
            "drifted": prediction_drifted,
        }
    ]
    rows += [
        {
            "segment": ALL,
            "column": f"f{i}",
            "kind": "feature",
            "method": "Wasserstein distance (normed)",
            "value": 0.2 if i < drifted_features else 0.01,
            "threshold": 0.1,
            "drifted": i < drifted_features,
        }
        for i in range(features)
    ]
    # A drifting segment alone marks nothing.
    rows.append({**rows[0], "segment": "carrier=x", "drifted": True})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("prediction", "drifted", "realised", "ece", "expected"),
    [
        (False, 2, 0.80, 0.03, []),
        (True, 2, 0.80, 0.03, ["its score drifted"]),
        (False, 5, 0.80, 0.03, ["50% of its features drifted"]),
        (False, 0, 0.74, 0.03, ["its realised AUC 0.740 fell below its test AUC 0.800"]),
        (False, 0, 0.80, 0.049, []),
        (False, 0, 0.80, 0.05, ["its realised calibration error 0.050 rose above its test"]),
        (True, 6, 0.70, 0.03, ["its score drifted", "60% of its features", "its realised AUC"]),
    ],
)
def test_retrain_is_due_past_a_threshold(prediction, drifted, realised, ece, expected) -> None:
    from training.monitor import retrain_reasons

    quality = {"roc_auc": realised, "test_roc_auc": 0.80, "ece": ece, "test_ece": 0.02}
    reasons = retrain_reasons(_table(prediction, drifted), quality, 0.5, 0.05, 0.03)
    assert len(reasons) == len(expected)
    for reason, start in zip(reasons, expected, strict=True):
        assert reason.startswith(start), reason


def test_marks_keep_their_first_instant_and_clear(tmp_path) -> None:
    from models.served.retrain import clear, mark, read_marks

    assert read_marks(tmp_path) == {}
    mark(tmp_path, "churn", "its score drifted", "2025-01-01T00:00:00+00:00")
    mark(tmp_path, "churn", "its realised AUC fell", "2025-01-02T00:00:00+00:00")
    mark(tmp_path, "delay_risk", "its score drifted", "2025-01-02T00:00:00+00:00")
    marks = read_marks(tmp_path)
    assert marks["churn"] == {
        "since": "2025-01-01T00:00:00+00:00",
        "reason": "its realised AUC fell",
    }
    assert clear(tmp_path, "churn") is not None
    assert set(read_marks(tmp_path)) == {"delay_risk"}
    assert clear(tmp_path, "churn") is None


def test_the_estimate_without_labels_is_the_expected_roc_auc() -> None:
    from sklearn.metrics import roc_auc_score

    from training.monitor import estimated_auc

    rng = np.random.default_rng(11)
    p = np.round(rng.beta(2, 5, 400), 2)  # ties included
    # Independently: every row once as a positive weighted p, once as a negative weighted 1-p.
    y = np.r_[np.ones_like(p), np.zeros_like(p)]
    weights = np.r_[p, 1 - p]
    expected = roc_auc_score(y, np.r_[p, p], sample_weight=weights)
    assert estimated_auc(p) == pytest.approx(expected, abs=1e-12)
    # Calibrated scores: the estimate lands near the AUC the labels then give.
    scores = rng.beta(2, 5, 20_000)
    labels = rng.uniform(size=scores.size) < scores
    assert estimated_auc(scores) == pytest.approx(roc_auc_score(labels, scores), abs=0.01)
    assert np.isnan(estimated_auc(np.zeros(10)))


def test_monitoring_a_run_again_replaces_its_rows(tmp_path) -> None:
    import pyarrow.parquet as pq

    from flows.monitor import DRIFT_RUN, _append

    end = pd.Timestamp("2025-07-01", tz="UTC")
    first = pd.DataFrame(
        {
            "model": ["churn"] * 2,
            "version": ["1"] * 2,
            "current_end": [end] * 2,
            "value": [1.0, 2.0],
        }
    )
    path = _append(first, tmp_path / "drift.parquet", DRIFT_RUN)
    _append(first.assign(value=[3.0, 4.0]), path, DRIFT_RUN)
    table = pq.read_table(path).to_pandas()
    assert table["value"].tolist() == [3.0, 4.0]
    # Another day (or version) adds its own rows.
    _append(first.assign(current_end=end + pd.Timedelta(days=1)), path, DRIFT_RUN)
    _append(first.assign(version="2"), path, DRIFT_RUN)
    assert len(pq.read_table(path)) == 6


def test_features_that_trend_within_the_training_window_are_found() -> None:
    """A feature that grows with time drifts between the halves of the training window; one
    drawn the same way throughout does not."""
    from models.spec import EVENT_TIME
    from training.monitor import trending

    rng = np.random.default_rng(3)
    # Halves above 1,000 rows: Evidently's distance tests, not its p-value tests (which flag
    # a share of steady columns by chance).
    n = 4_000
    frame = pd.DataFrame(
        {
            EVENT_TIME: pd.date_range("2024-01-01", periods=n, freq="3h", tz="UTC"),
            "tenure_days": np.arange(n) / 8.0 + rng.normal(0, 5, n),
            "basket": rng.gamma(2.0, 30.0, n),
            "channel": rng.choice(["email", "sms"], n),
        }
    )
    assert trending(frame, ["tenure_days", "basket"], ["channel"]) == {"tenure_days"}
    assert trending(frame.head(60), ["tenure_days", "basket"], ["channel"]) == set()


def test_trending_features_are_left_out_of_the_drifted_share() -> None:
    from training.monitor import retrain_reasons

    table = _table(False, 5)
    features = table["kind"] == "feature"
    drifted = table.index[features & table["drifted"]]
    table["trending"] = False
    # Four of the five drifted features trend within the training window: 1 of 6 is left.
    table.loc[drifted[:4], "trending"] = True
    quality = {"roc_auc": 0.8, "test_roc_auc": 0.8, "ece": 0.02, "test_ece": 0.02}
    assert retrain_reasons(table, quality, 0.5, 0.05, 0.03) == []
    table["trending"] = False
    (reason,) = retrain_reasons(table, quality, 0.5, 0.05, 0.03)
    assert reason.startswith("50% of its features drifted")


def test_a_score_that_trends_within_the_training_window_marks_nothing_alone() -> None:
    from training.monitor import retrain_reasons

    table = _table(True, 0)
    table["trending"] = False
    quality = {"roc_auc": 0.8, "test_roc_auc": 0.8, "ece": 0.02, "test_ece": 0.02}
    (reason,) = retrain_reasons(table, quality, 0.5, 0.05, 0.03)
    assert reason.startswith("its score drifted")
    table.loc[table["kind"] == "prediction", "trending"] = True
    assert retrain_reasons(table, quality, 0.5, 0.05, 0.03) == []
    # Its realised quality still marks it.
    worse = {**quality, "roc_auc": 0.7}
    (reason,) = retrain_reasons(table, worse, 0.5, 0.05, 0.03)
    assert reason.startswith("its realised AUC")


def test_a_moved_score_marks_only_where_its_estimated_auc_falls() -> None:
    """A score that drifted while the AUC estimated from the scores alone holds (the business
    moved, the model still ranks) marks nothing; one whose estimate fell by the AUC drop
    threshold or more against the same estimate on the training window marks."""
    from training.monitor import retrain_reasons

    table = _table(True, 0)
    table["trending"] = False
    quality = {"roc_auc": 0.8, "test_roc_auc": 0.8, "ece": 0.02, "test_ece": 0.02}
    holds = {"estimated": 0.79, "estimated_before": 0.81}
    assert retrain_reasons(table, quality, 0.5, 0.05, 0.03, **holds) == []
    # Without labels yet, the same.
    assert retrain_reasons(table, None, 0.5, 0.05, 0.03, **holds) == []
    falls = {"estimated": 0.76, "estimated_before": 0.81}
    (reason,) = retrain_reasons(table, None, 0.5, 0.05, 0.03, **falls)
    assert reason.startswith("its score drifted")
    assert "0.760 fell below the same estimate on its training window 0.810" in reason
    # An estimate that cannot be made (one class only) leaves the drift to mark alone.
    unknown = {"estimated": float("nan"), "estimated_before": 0.81}
    (reason,) = retrain_reasons(table, None, 0.5, 0.05, 0.03, **unknown)
    assert reason.startswith("its score drifted")
    # A score that did not drift marks nothing, however its estimate moved.
    assert retrain_reasons(_table(False, 0), None, 0.5, 0.05, 0.03, **falls) == []


def test_drift_marks_a_score_that_grows_through_the_training_window_as_trending() -> None:
    """The drift table's prediction row is trending when the score itself moves between
    the halves of the training window, and not when it is steady there."""
    from models.spec import EVENT_TIME
    from training.monitor import Windows, drift

    rng = np.random.default_rng(5)
    n = 4_000
    times = pd.date_range("2024-01-01", periods=n, freq="3h", tz="UTC")
    basket = rng.gamma(2.0, 30.0, n)
    for grows, expected in ((True, True), (False, False)):
        score = (np.arange(n) / n if grows else np.full(n, 0.5)) * 0.5 + rng.uniform(0, 0.1, n)
        reference = pd.DataFrame({EVENT_TIME: times, "basket": basket, SCORE: score})
        current = reference.tail(500).assign(**{SCORE: score[-500:] + 0.2})
        spans = Windows(reference, current, (times[0], times[-1]), (times[-500], times[-1]))
        table = drift("delay_risk", spans, ["basket"], []).table
        row = table[(table["segment"] == ALL) & (table["kind"] == "prediction")].iloc[0]
        assert bool(row["drifted"])
        assert bool(row["trending"]) is expected


def test_a_champions_span_is_its_served_models_where_logged() -> None:
    from training.monitor import champion_span

    split = {
        "split_train_start": "2024-01-01T00:00:00+00:00",
        "split_train_end": "2025-01-01T00:00:00+00:00",
        "split_validation_end": "2025-05-01T00:00:00+00:00",
    }
    # A run of the time split's model without the served span: its training window, and
    # the validation window's end as the last decision it saw.
    assert champion_span(split) == (
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2025-01-01", tz="UTC"),
        pd.Timestamp("2025-05-01", tz="UTC"),
    )
    refit = split | {
        "served_train_start": "2024-01-01T00:00:00+00:00",
        "served_train_end": "2025-04-30T00:00:00+00:00",
        "served_seen_end": "2025-09-01T00:00:00+00:00",
    }
    assert champion_span(refit)[1:] == (
        pd.Timestamp("2025-04-30", tz="UTC"),
        pd.Timestamp("2025-09-01", tz="UTC"),
    )
