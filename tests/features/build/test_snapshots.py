"""Snapshot-grid running counts, sums, latest and earliest values equal a brute-force scan
over the events each row sees (events stamped strictly before the row's midnight)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.build.common import US_PER_DAY
from features.build.snapshots import Events, SnapshotGrid

WINDOW = 3
events = st.lists(
    st.tuples(
        st.integers(0, 3),  # entity
        st.integers(0, 20 * 24 * 3600),  # seconds into the period
        st.floats(-5, 5, allow_nan=False),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(events=events)
def test_grid_matches_brute_force(events) -> None:
    entity = np.array([e for e, _, _ in events], dtype=np.int64)
    ts = np.array([t for _, t, _ in events], dtype=np.int64) * 1_000_000
    value = np.array([v for _, _, v in events], dtype=np.float64)
    kind = Events.of(entity, ts, value=value)
    first = (np.arange(4), np.zeros(4, dtype=np.int64))
    grid = SnapshotGrid.build([first], [(kind, (WINDOW,))], end_day=40)

    count = grid.count(kind)
    windowed = grid.count(kind, WINDOW)
    total = grid.total(kind, value)
    last = grid.last(kind, ts / 1e6)
    earliest = grid.first(kind, ts / 1e6)
    for row, (e, day) in enumerate(zip(grid.entity, grid.day, strict=True)):
        midnight = day * US_PER_DAY
        seen = [
            (t, v) for g, t, v in zip(entity, ts, value, strict=True) if g == e and t < midnight
        ]
        recent = [t for t, _ in seen if t >= midnight - WINDOW * US_PER_DAY]
        assert count[row] == len(seen)
        assert windowed[row] == len(recent)
        assert np.isclose(total[row], sum(v for _, v in seen))
        if seen:
            # Among events at one instant, the one given last is the latest.
            latest = max(seen, key=lambda tv: tv[0])[0]
            assert last[row] == latest / 1e6
            assert earliest[row] == min(t for t, _ in seen) / 1e6
        else:
            assert np.isnan(last[row])
            assert np.isnan(earliest[row])


def test_rows_exist_where_values_change() -> None:
    kind = Events.of(np.array([0]), np.array([5 * US_PER_DAY + 10]))
    grid = SnapshotGrid.build([], [(kind, (WINDOW,))], end_day=30)
    # Seen from the next midnight (day 6); leaves the window 3 days later (day 9).
    assert grid.day.tolist() == [6, 9]
    assert grid.count(kind, WINDOW).tolist() == [1, 0]
    assert grid.count(kind).tolist() == [1, 1]
