"""Time split: windows in time order, same-instant rows together, purging, and refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.spec import SplitConfig, SplitError
from training.split import Window, check_windows, expanding_folds, time_split


def _events(days: list[int], horizon_days: int = 0) -> pd.DataFrame:
    start = pd.Timestamp("2025-01-01", tz="UTC")
    times = [start + pd.Timedelta(days=d) for d in days]
    return pd.DataFrame(
        {
            "event_timestamp": times,
            "label_ts": [t + pd.Timedelta(days=horizon_days) for t in times],
            "label": [i % 2 for i in range(len(days))],
        }
    )


def test_windows_follow_time_and_fractions() -> None:
    frame = _events(list(range(10))).sample(frac=1.0, random_state=3)
    split = time_split(frame, SplitConfig(fractions=(0.6, 0.2, 0.2), purge=False))
    assert [w.rows for w in split.windows()] == [6, 2, 2]
    times = frame["event_timestamp"]
    assert times.loc[split.train.index].max() < times.loc[split.validation.index].min()
    assert times.loc[split.validation.index].max() < times.loc[split.test.index].min()
    assert split.summary()["split_test_rows"] == 2


def test_rows_sharing_an_instant_stay_in_one_window() -> None:
    # Three snapshot dates, many customers each: a window never cuts a snapshot date.
    frame = _events([0] * 5 + [30] * 5 + [60] * 5)
    split = time_split(frame, SplitConfig(fractions=(0.5, 0.25, 0.25), purge=False))
    for window in split.windows():
        assert frame.loc[window.index, "event_timestamp"].nunique() == 1


def test_purge_drops_rows_whose_label_is_known_only_later() -> None:
    frame = _events(list(range(20)), horizon_days=2)
    split = time_split(frame, SplitConfig(fractions=(0.6, 0.2, 0.2), purge=True))
    # Validation starts on day 12: train rows of days 10 and 11 are known only on 12 and 13;
    # likewise validation rows of days 14 and 15 before the test window of day 16.
    assert (split.train.rows, split.train.purged) == (10, 2)
    assert (split.validation.rows, split.validation.purged) == (2, 2)
    assert (split.test.rows, split.test.purged) == (4, 0)
    known = frame.loc[split.train.index, "label_ts"]
    assert (known < frame.loc[split.validation.index, "event_timestamp"].min()).all()


def test_explicit_boundaries() -> None:
    frame = _events(list(range(10)))
    config = SplitConfig(
        boundaries=(pd.Timestamp("2025-01-04"), pd.Timestamp("2025-01-08")), purge=False
    )
    split = time_split(frame, config)
    assert [w.rows for w in split.windows()] == [3, 4, 3]


@pytest.mark.parametrize(
    ("days", "config", "message"),
    [
        ([0] * 10, SplitConfig(purge=False), "holds no label events"),
        (
            list(range(10)),
            SplitConfig(
                boundaries=(pd.Timestamp("2025-01-08"), pd.Timestamp("2025-01-04")), purge=False
            ),
            "must start before",
        ),
        (
            list(range(10)),
            SplitConfig(
                boundaries=(pd.Timestamp("2025-02-01"), pd.Timestamp("2025-03-01")), purge=False
            ),
            "holds no label events",
        ),
        (list(range(10)), SplitConfig(fractions=(0.6, 0.0, 0.4), purge=False), "positive"),
        ([], SplitConfig(purge=False), "no label events"),
    ],
)
def test_refuses_empty_or_disordered_windows(days, config, message) -> None:
    with pytest.raises(SplitError, match=message):
        time_split(_events(days), config)


def test_purge_needs_the_label_known_column() -> None:
    frame = _events(list(range(10))).drop(columns="label_ts")
    with pytest.raises(SplitError, match="label-known"):
        time_split(frame, SplitConfig(purge=True))


def test_refuses_a_test_event_before_the_training_window_ends() -> None:
    frame = _events(list(range(10)))
    times = frame["event_timestamp"]
    start, end = times.min(), times.max()
    windows = (
        Window("train", start, end, frame.index[[0, 1, 2, 3, 8]]),
        Window("validation", start, end, frame.index[[4, 5]]),
        Window("test", start, end, frame.index[[6, 7, 9]]),
    )
    with pytest.raises(SplitError, match="leakage"):
        check_windows(windows, times)


def test_refuses_a_row_in_two_windows() -> None:
    frame = _events([0, 1, 2, 3])
    times = frame["event_timestamp"]
    start, end = times.min(), times.max()
    windows = (
        Window("train", start, end, frame.index[[0, 1]]),
        Window("test", start, end, frame.index[[2, 3]]),
        Window("extra", start, end, frame.index[[3]]),
    )
    with pytest.raises(SplitError):
        check_windows(windows, times)


def test_test_fraction_keeps_validations_share_of_the_rest() -> None:
    config = SplitConfig(fractions=(0.6, 0.2, 0.2), purge=False).with_test_fraction(0.3)
    assert config.fractions == pytest.approx((0.525, 0.175, 0.3))
    assert config.purge is False
    split = time_split(_events(list(range(100))), config)
    assert [w.rows for w in split.windows()] == [52, 18, 30]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_outside_zero_and_one_is_refused(fraction: float) -> None:
    with pytest.raises(SplitError, match="strictly between 0 and 1"):
        SplitConfig().with_test_fraction(fraction)


def test_sampling_keeps_whole_entities_and_is_repeatable() -> None:
    from training.data import sample_entities

    events = pd.DataFrame(
        {"shipment_id": np.repeat([f"s{i}" for i in range(1000)], 5), "x": np.arange(5000)}
    )
    assert sample_entities(events, ["shipment_id"], None) is events
    assert sample_entities(events, ["shipment_id"], 10_000) is events
    kept = sample_entities(events, ["shipment_id"], 1000)
    again = sample_entities(events, ["shipment_id"], 1000)
    pd.testing.assert_frame_equal(kept, again)
    assert 600 < len(kept) < 1400
    # Every kept shipment keeps all five of its decisions.
    assert (kept.groupby("shipment_id").size() == 5).all()


def test_a_sample_of_a_sample_with_its_own_hash_key_keeps_a_share_of_it() -> None:
    from training.data import sample_entities

    events = pd.DataFrame({"shipment_id": [f"s{i}" for i in range(20_000)]})
    first = sample_entities(events, ["shipment_id"], 6000)
    # The same key keeps every row the first sample kept, whatever the limit.
    assert len(sample_entities(first, ["shipment_id"], 2000)) == len(first)
    second = sample_entities(first, ["shipment_id"], 2000, "outer-quantiles0")
    assert 1500 < len(second) < 2500
    assert set(second["shipment_id"]) <= set(first["shipment_id"])


def _daily_events(days: int) -> pd.DataFrame:
    times = pd.date_range("2024-01-01", periods=days, freq="D", tz="UTC")
    return pd.DataFrame({"event_timestamp": times, "label_ts": times + pd.Timedelta(days=3)})


def test_expanding_folds_never_reach_the_end_and_purge_unknown_labels():
    frame = _daily_events(100)
    end = pd.Timestamp("2024-03-11", tz="UTC")
    folds = expanding_folds(frame, end, folds=3)
    assert len(folds) == 3
    previous = 0
    for fold in folds:
        scored = frame.loc[fold.test, "event_timestamp"]
        assert scored.max() < end
        assert scored.min() >= fold.start
        assert frame.loc[fold.validation, "label_ts"].max() < fold.start
        assert (
            frame.loc[fold.train, "label_ts"].max()
            < frame.loc[fold.validation, "event_timestamp"].min()
        )
        assert len(fold.train) > previous
        previous = len(fold.train)


def test_expanding_folds_refuse_an_empty_fold():
    with pytest.raises(SplitError):
        expanding_folds(_daily_events(4), pd.Timestamp("2024-01-05", tz="UTC"), folds=4)


def test_the_settings_cap_every_model_s_label_events(tmp_path, monkeypatch) -> None:
    from aftersale.settings import SettingsError, get_settings
    from models import MODELS
    from models.spec import DEFAULT_MAX_EVENTS
    from training.data import decisions, run_inputs
    from training.trainer import TrainOptions

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AFTERSALE_TRAIN_MAX_EVENTS", raising=False)
    times = pd.date_range("2024-01-01", periods=5000, freq="h", tz="UTC")
    events = pd.DataFrame(
        {
            "shipment_id": np.repeat([f"s{i}" for i in range(1000)], 5),
            "event_timestamp": times,
            "label": 0,
            "label_ts": times + pd.Timedelta(days=3),
        }
    )
    options = TrainOptions(tables={})
    for name in MODELS:
        spec, _, _ = run_inputs(MODELS[name], get_settings(), options)
        assert spec.max_events == DEFAULT_MAX_EVENTS
    monkeypatch.setenv("AFTERSALE_TRAIN_MAX_EVENTS", "1000")
    for name in MODELS:
        spec, _, _ = run_inputs(MODELS[name], get_settings(), options)
        assert spec.max_events == 1000
    spec, _, _ = run_inputs(MODELS["delay_risk"], get_settings(), options)
    kept = decisions(spec, None, events)
    assert 600 < len(kept) < 1400
    assert (kept.groupby("shipment_id").size() == 5).all()
    monkeypatch.setenv("AFTERSALE_TRAIN_MAX_EVENTS", "0")
    with pytest.raises(SettingsError, match="TRAIN_MAX_EVENTS"):
        get_settings()
