"""The as-of index answers exactly what a brute-force scan over the events answers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.build.asof import EventIndex

events = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 30), st.floats(-5, 5, allow_nan=False)),
    max_size=40,
)
queries = st.lists(st.tuples(st.integers(0, 5), st.integers(-2, 33)), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(events=events, queries=queries, inclusive=st.booleans())
def test_matches_brute_force(events, queries, inclusive) -> None:
    groups = np.array([g for g, _, _ in events], dtype=np.int64)
    times = np.array([t for _, t, _ in events], dtype=np.int64)
    values = np.array([v for _, _, v in events], dtype=np.float64)
    q_groups = np.array([g for g, _ in queries], dtype=np.int64)
    q_times = np.array([t for _, t in queries], dtype=np.int64)
    index = EventIndex.build(groups, times)

    counts = index.count(q_groups, q_times, inclusive=inclusive)
    totals = index.total(values, q_groups, q_times, inclusive=inclusive)
    lasts = index.last(times, q_groups, q_times, inclusive=inclusive, fill=-1)
    for i, (g, t) in enumerate(queries):
        before = [(et, v) for eg, et, v in events if eg == g and (et <= t if inclusive else et < t)]
        assert counts[i] == len(before)
        assert np.isclose(totals[i], sum(v for _, v in before))
        assert lasts[i] == (max(et for et, _ in before) if before else -1)


def test_last_prefers_the_later_of_two_events_at_one_instant() -> None:
    index = EventIndex.build(np.array([0, 0]), np.array([10, 10]))
    assert (
        index.last(
            np.array(["first", "second"], dtype=object),
            np.array([0]),
            np.array([10]),
            inclusive=True,
            fill=None,
        )[0]
        == "second"
    )
    assert (
        index.last(
            np.array(["first", "second"], dtype=object), np.array([0]), np.array([10]), fill=None
        )[0]
        is None
    )


def test_empty_index() -> None:
    index = EventIndex.build(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert index.count(np.array([0, 3]), np.array([5, 6])).tolist() == [0, 0]
    assert index.total(np.array([]), np.array([1]), np.array([1])).tolist() == [0.0]
