"""Snapshot-grid running counts, sums, latest and earliest values equal a brute-force scan
over the events each row sees (events stamped strictly before the row's instant, in a
trailing window until the midnight after them plus the window's days), and the value as of
every midnight is bit for bit what a daily grid stamped at midnights holds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.build.common import US_PER_DAY, US_PER_S, next_midnight_us
from features.build.snapshots import KEY_SECOND_BITS, Events, SnapshotGrid, seen_from_s

WINDOW = 3
S_PER_DAY = US_PER_DAY // US_PER_S
END_DAY = 18  # before the last events: rows past the end are left out
events = st.lists(
    st.tuples(
        st.integers(0, 3),  # entity
        st.integers(0, 20 * 24 * 3600),  # seconds into the period
        # Microseconds past the second: often none, so rows sit exactly at events.
        st.one_of(st.just(0), st.integers(0, US_PER_S - 1)),
        # Amounts with cents: sums of them round, as money does.
        st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 2)),
    ),
    max_size=30,
)


def build(events) -> tuple[np.ndarray, np.ndarray, np.ndarray, Events, SnapshotGrid]:
    entity = np.array([e for e, _, _, _ in events], dtype=np.int64)
    ts = np.array([s * US_PER_S + u for _, s, u, _ in events], dtype=np.int64)
    value = np.array([v for _, _, _, v in events], dtype=np.float64)
    kind = Events.of(entity, ts, value=value)
    # Every entity exists from the epoch (as a customer from signup).
    first = (np.arange(4), seen_from_s(np.zeros(4, dtype=np.int64)))
    grid = SnapshotGrid.build([first], [(kind, (WINDOW,))], end_s=END_DAY * S_PER_DAY)
    return entity, ts, value, kind, grid


@settings(max_examples=300, deadline=None)
@given(events=events)
def test_grid_matches_brute_force(events) -> None:
    entity, ts, value, kind, grid = build(events)
    count = grid.count(kind)
    windowed = grid.count(kind, WINDOW)
    total = grid.total(kind, value)
    windowed_total = grid.total(kind, value, WINDOW)
    last = grid.last(kind, ts / 1e6)
    earliest = grid.first(kind, ts / 1e6)
    assert np.all(np.diff(grid.key) > 0)
    for row, (e, second) in enumerate(zip(grid.entity, grid.second, strict=True)):
        at = second * US_PER_S
        assert grid.ts_us[row] == at
        seen = [(t, v) for g, t, v in zip(entity, ts, value, strict=True) if g == e and t < at]
        # An event leaves the window at the midnight after it plus WINDOW days.
        recent = [(t, v) for t, v in seen if next_midnight_us(t) + WINDOW * US_PER_DAY > at]
        assert count[row] == len(seen)
        assert windowed[row] == len(recent)
        assert np.isclose(total[row], sum(v for _, v in seen))
        assert np.isclose(windowed_total[row], sum(v for _, v in recent), atol=1e-9)
        if seen:
            # Among events at one instant, the one given last is the latest.
            latest = max(seen, key=lambda tv: tv[0])[0]
            assert last[row] == latest / 1e6
            assert earliest[row] == min(t for t, _ in seen) / 1e6
        else:
            assert np.isnan(last[row])
            assert np.isnan(earliest[row])


@settings(max_examples=200, deadline=None)
@given(events=events)
def test_rows_sit_just_after_events_and_where_windows_end(events) -> None:
    entity, ts, _, _, grid = build(events)
    # The whole second after each event, the midnight it leaves the window and the first
    # rows: nothing else, nothing past the end.
    expected = {(e, 1) for e in range(4)}
    expected |= {(e, t // US_PER_S + 1) for e, t in zip(entity, ts, strict=True)}
    expected |= {
        (e, next_midnight_us(t) // US_PER_S + WINDOW * S_PER_DAY)
        for e, t in zip(entity, ts, strict=True)
    }
    expected = {(e, s) for e, s in expected if s <= END_DAY * S_PER_DAY}
    assert set(zip(grid.entity.tolist(), grid.second.tolist(), strict=True)) == expected


def daily_grid(entity, ts, value, end_day):
    """The former day-keyed grid, as a reference: a row at the midnight after each event and
    at the midnight it leaves the window, values summed a day at a time in event order."""
    seen = next_midnight_us(ts) // US_PER_DAY
    days = {(e, d) for e, d in zip(entity, seen, strict=True)}
    days |= {(e, d + WINDOW) for e, d in zip(entity, seen, strict=True)}
    days |= {(e, 1) for e in range(4)}  # the midnight after the epoch
    rows = sorted((e, d) for e, d in days if d <= end_day)
    index = {r: i for i, r in enumerate(rows)}
    out = {}
    for name, window in (("count", None), ("windowed", WINDOW)):
        for dtype, weights in ((np.int64, None), (np.float64, value)):
            increments = np.zeros(len(rows), dtype=dtype)
            for offset, sign in ((0, 1), (window, -1)) if window else ((0, 1),):
                at = [index.get((e, d + offset), -1) for e, d in zip(entity, seen, strict=True)]
                at = np.array(at, dtype=np.int64)
                ok = at >= 0
                w = None if weights is None else weights[ok] * sign
                counts = np.bincount(at[ok], weights=w, minlength=len(rows))
                counts = counts * sign if weights is None else counts
                increments = increments + counts.astype(dtype)
            by_entity = pd.Series(increments).groupby([e for e, _ in rows])
            out[name, dtype] = by_entity.cumsum().to_numpy()
    return rows, out


@settings(max_examples=300, deadline=None)
@given(events=events)
def test_value_as_of_each_midnight_is_the_daily_grid_value(events) -> None:
    entity, ts, value, kind, grid = build(events)
    rows, daily = daily_grid(entity, ts, value, END_DAY)
    ours = {
        ("count", np.int64): grid.count(kind),
        ("count", np.float64): grid.total(kind, value),
        ("windowed", np.int64): grid.count(kind, WINDOW),
        ("windowed", np.float64): grid.total(kind, value, WINDOW),
    }
    for i, (e, day) in enumerate(rows):
        # The newest row at or before the midnight.
        key = (e << KEY_SECOND_BITS) | (day * S_PER_DAY)
        position = np.searchsorted(grid.key, key, side="right") - 1
        assert position >= 0
        assert grid.entity[position] == e
        for name, values in ours.items():
            # Equal bit for bit, floats included: training rows at midnights do not move.
            assert values[position] == daily[name][i], (name, e, day)


def test_rows_exist_where_values_change() -> None:
    kind = Events.of(np.array([0]), np.array([5 * US_PER_DAY + 10]))
    grid = SnapshotGrid.build([], [(kind, (WINDOW,))], end_s=30 * S_PER_DAY)
    # Seen from the next whole second; leaves the window at the next midnight plus 3 days.
    assert grid.second.tolist() == [5 * S_PER_DAY + 1, 9 * S_PER_DAY]
    assert grid.count(kind, WINDOW).tolist() == [1, 0]
    assert grid.count(kind).tolist() == [1, 1]


def test_an_event_shows_from_the_second_after_it() -> None:
    day = 19_000 * US_PER_DAY  # 2022-01-08
    order = day + (20 * 3600 + 56 * 60) * US_PER_S  # 20:56:00 exactly
    late = day + (22 * 3600 + 53 * 60) * US_PER_S + 250_000  # 22:53:00.25
    kind = Events.of(np.array([0, 0]), np.array([order, late]))
    grid = SnapshotGrid.build([], [(kind, ())], end_s=(day + US_PER_DAY) // US_PER_S)
    assert grid.ts_us.tolist() == [order + US_PER_S, late - 250_000 + US_PER_S]
    assert grid.count(kind).tolist() == [1, 2]
    # Nothing is seen at or before its own instant.
    assert grid.last(kind, kind.ts / 1e6).tolist() == [order / 1e6, late / 1e6]


def test_keys_refuse_entities_they_cannot_hold() -> None:
    kind = Events.of(np.array([1 << 30]), np.array([US_PER_DAY]))
    with pytest.raises(ValueError, match="entities"):
        SnapshotGrid.build([], [(kind, ())], end_s=10 * S_PER_DAY)
