"""Snapshot grids: running counts, sums and latest values per entity, at any instant.

A grid holds one row per (entity, whole second) at which some value may change. A row
stamped at second s sees every event stamped strictly before s. An event at instant e first
shows in the row at the next whole second, floor(e / 1 s) + 1 s, so a decision at instant t
that reads the newest row at or before t sees the events before t, to the second: an
order at 20:56 is known to a decision at 23:44 the same day, and no event is ever visible
at a row stamped at or before it.

Trailing windows stay day-granular: an event leaves a W-day window at the UTC midnight after
it plus W days. The value as of every UTC midnight is therefore what a daily snapshot at
that midnight (everything strictly before it, windows counted in days) would hold; float
sums are added up a day at a time so that it holds bit for bit (see `SnapshotGrid.total`).

Both rows of an event exist by construction (see `SnapshotGrid.build`), so every feature is
a running sum of per-row increments: one scatter of the events onto rows, then one
cumulative sum per entity. The cost is linear in events plus rows, whatever the number of
features. A key packs (entity, seconds since the epoch) into one int64 (`KEY_SECOND_BITS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from features.build.common import US_PER_DAY, US_PER_S, is_missing_us, next_midnight_us

# A key is entity << KEY_SECOND_BITS | seconds since the epoch: seconds fit in 33 bits until
# the year 2242, which leaves 30 bits (about a billion) for entities of one grid.
KEY_SECOND_BITS = 33
MAX_SECOND = (1 << KEY_SECOND_BITS) - 1
MAX_ENTITY = (1 << (63 - KEY_SECOND_BITS)) - 1
S_PER_DAY = US_PER_DAY // US_PER_S


def seen_from_s(ts_us: np.ndarray) -> np.ndarray:
    """The first whole second strictly after each instant (µs): when a row sees it."""
    return np.asarray(ts_us, dtype=np.int64) // US_PER_S + 1


def window_exit_s(ts_us: np.ndarray, days: int) -> np.ndarray:
    """The second an event at each instant (µs) leaves a trailing `days`-day window: the
    UTC midnight after it, plus `days` days."""
    return next_midnight_us(np.asarray(ts_us, dtype=np.int64)) // US_PER_S + days * S_PER_DAY


@dataclass(frozen=True)
class Events:
    """Events of one kind: entity code, instant (µs), and aligned value columns."""

    entity: np.ndarray
    ts: np.ndarray
    values: dict[str, np.ndarray]

    @staticmethod
    def of(entity: np.ndarray, ts: np.ndarray, **values: np.ndarray) -> Events:
        """Events with unknown entities (code < 0) or instants left out."""
        entity = np.asarray(entity, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.int64)
        keep = (entity >= 0) & ~is_missing_us(ts)
        return Events(entity[keep], ts[keep], {k: np.asarray(v)[keep] for k, v in values.items()})

    def sorted_by_entity(self) -> Events:
        """The same events ordered by entity (stable), so `within` can slice them."""
        order = np.argsort(self.entity, kind="stable")
        return Events(
            self.entity[order], self.ts[order], {k: v[order] for k, v in self.values.items()}
        )

    def within(self, lo: int, hi: int) -> Events:
        """Events of entities lo..hi-1 (sorted events only), renumbered from 0."""
        start, stop = np.searchsorted(self.entity, [lo, hi])
        return Events(
            self.entity[start:stop] - lo,
            self.ts[start:stop],
            {k: v[start:stop] for k, v in self.values.items()},
        )

    def seen_s(self) -> np.ndarray:
        """Second of the first row that sees each event (see `seen_from_s`)."""
        return seen_from_s(self.ts)

    def row_s(self, window: int) -> np.ndarray:
        """Second of the row where each event enters (window 0) or leaves a trailing
        `window`-day window."""
        return self.seen_s() if window == 0 else window_exit_s(self.ts, window)


@dataclass(frozen=True)
class _DayGroups:
    """A grid's rows grouped by entity and UTC day: the rows of one entity from just after
    a midnight up to and including the next one."""

    group: np.ndarray  # group of each row
    rank: np.ndarray  # position of each row in its group
    entity: np.ndarray  # entity of each group
    entity_first: np.ndarray  # whether a group is its entity's first
    last: np.ndarray  # whether a row is its group's last

    def scan(self, values: np.ndarray) -> np.ndarray:
        """Running sum of `values` within each group: a scan by doubling, in as many passes
        as the largest group has bits, each depending only on the group's own rows."""
        out = values.copy()
        step, largest = 1, int(self.rank.max(initial=0))
        while step <= largest:
            at = np.flatnonzero(self.rank >= step)
            out[at] = out[at] + out[at - step]
            step *= 2
        return out


@dataclass(frozen=True)
class SnapshotGrid:
    """Rows (entity, second), sorted, with the position where each entity's rows start."""

    entity: np.ndarray
    second: np.ndarray
    key: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    # (id of an Events, window) → (that Events, positions of its events with a row, those
    # rows): many features scatter the same events, and the Events is kept so its id cannot
    # be reused while cached.
    _rows: dict = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def build(
        first_rows: list[tuple[np.ndarray, np.ndarray]],
        events: list[tuple[Events, tuple[int, ...]]],
        end_s: int,
    ) -> SnapshotGrid:
        """Rows for every second at which a value may change, up to and including `end_s`.

        Args:
            first_rows: (entity, second) pairs that must have a row, e.g. the second after
                the signup.
            events: Event kinds with the trailing windows (days) computed over them.
            end_s: Last second to keep (seconds since the epoch).
        """
        entity_parts = [np.asarray(e, dtype=np.int64) for e, _ in first_rows]
        second_parts = [np.asarray(s, dtype=np.int64) for _, s in first_rows]
        for kind, windows in events:
            for window in (0, *windows):
                entity_parts.append(kind.entity)
                second_parts.append(kind.row_s(window))
        entity = np.concatenate([np.zeros(0, np.int64), *entity_parts])
        second = np.concatenate([np.zeros(0, np.int64), *second_parts])
        keep = second <= end_s
        entity, second = entity[keep], second[keep]
        _check_packable(entity, second)
        # Sort then drop repeats: faster than hashing for tens of millions of int64 keys.
        key = np.sort((entity << KEY_SECOND_BITS) | second)
        key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key
        entity, second = key >> KEY_SECOND_BITS, key & MAX_SECOND
        starts = np.flatnonzero(np.r_[True, entity[1:] != entity[:-1]])
        sizes = np.diff(np.r_[starts, len(entity)])
        return SnapshotGrid(entity, second, key, starts, sizes)

    def __len__(self) -> int:
        return len(self.key)

    @property
    def ts_us(self) -> np.ndarray:
        """Each row's instant, µs since the epoch."""
        return self.second * US_PER_S

    def rows(self, entity: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Row of each (entity, second), -1 where the grid has none (beyond its end)."""
        entity = np.asarray(entity, dtype=np.int64)
        second = np.asarray(second, dtype=np.int64)
        key = (entity << KEY_SECOND_BITS) | (second & MAX_SECOND)
        position = np.searchsorted(self.key, key)
        found = (position < len(self.key)) & (second >= 0) & (second <= MAX_SECOND)
        found[found] = self.key[position[found]] == key[found]
        return np.where(found, position, -1)

    def _events_rows(self, kind: Events, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Events that have a row where they enter (window 0) or leave the trailing window,
        as (their positions in `kind`, those rows)."""
        cached = self._rows.get((id(kind), window))
        if cached is None:
            row = self.rows(kind.entity, kind.row_s(window))
            ok = row >= 0
            position = np.flatnonzero(ok)
            cached = (kind, position, row if len(position) == len(row) else row[ok])
            self._rows[(id(kind), window)] = cached
        return cached[1], cached[2]

    @cached_property
    def _entity_start(self) -> np.ndarray:
        """Position of the first row of each row's entity."""
        return np.repeat(self.starts, self.sizes)

    @cached_property
    def _days(self) -> _DayGroups:
        """Rows grouped by (entity, the UTC midnight at or after the row)."""
        day = -(-self.second // S_PER_DAY)
        new = np.r_[True, (self.entity[1:] != self.entity[:-1]) | (day[1:] != day[:-1])]
        new = new[: len(self)]
        group = np.cumsum(new) - 1
        rank = np.arange(len(self)) - np.flatnonzero(new)[group]
        entity = self.entity[new]
        entity_first = np.r_[True, entity[1:] != entity[:-1]][: len(entity)]
        return _DayGroups(group, rank, entity, entity_first, np.r_[new[1:], True][: len(self)])

    def _running(self, increments: np.ndarray) -> np.ndarray:
        """Per-entity running sum of per-row integer increments: one pass over all rows,
        minus what the entities before each one summed (exact)."""
        if not len(increments):
            return increments
        total = np.cumsum(increments)
        before = total[self.starts] - increments[self.starts]
        total -= np.repeat(before, self.sizes)
        return total

    def _scatter(self, kind: Events, values, window: int | None) -> np.ndarray:
        """Per-row integer increments: +1 (or +value) where an event enters, -1 (or
        -value) where it leaves the trailing window."""
        increments = None
        for at in (0, window) if window else (0,):
            position, row = self._events_rows(kind, at)
            if values is None:
                counts = np.bincount(row, minlength=len(self))
            else:
                weights = values[position].astype(np.float64)
                counts = np.bincount(row, weights=weights, minlength=len(self)).astype(np.int64)
            if increments is None:
                increments = counts
            else:
                increments -= counts
        return increments

    def _float_running(self, kind: Events, values: np.ndarray, window: int | None) -> np.ndarray:
        """Per-entity running sum of float values, summed per entity (a value never depends
        on other entities or on how customers are cut into chunks).

        Sums are taken a UTC day at a time, in the order of the events, then carried from
        day to day, so the value as of every midnight is bit for bit what a daily grid holds
        and does not depend on the times of day. A row within a day adds the events of that
        day before it; a day's last row holds the day's sum itself.
        """
        if not len(self):
            return np.zeros(0, dtype=np.float64)
        days = self._days
        n_groups = len(days.entity)
        weights = np.nan_to_num(values.astype(np.float64))
        per_day = np.zeros(n_groups, dtype=np.float64)
        per_row = None
        for at, sign in ((0, 1), (window, -1)) if window else ((0, 1),):
            position, row = self._events_rows(kind, at)
            w = weights[position] * sign
            per_day = per_day + np.bincount(days.group[row], weights=w, minlength=n_groups)
            if at == 0:
                # Only entries fall strictly inside a day; exits sit at midnights.
                per_row = np.bincount(row, weights=w, minlength=len(self))
        carried = pd.Series(per_day).groupby(days.entity).cumsum().to_numpy()
        before = np.r_[0.0, carried[:-1]]
        before[days.entity_first] = 0.0
        return np.where(days.last, carried[days.group], before[days.group] + days.scan(per_row))

    def count(self, kind: Events, window: int | None = None) -> np.ndarray:
        """Events seen by each row (within the trailing `window` days when given)."""
        return self._running(self._scatter(kind, None, window))

    def total(self, kind: Events, values: np.ndarray, window: int | None = None) -> np.ndarray:
        """Sum of `values` over the events seen by each row; NaN adds nothing.

        Integer and boolean values are summed exactly; floats as `_float_running` says.
        """
        values = np.asarray(values)
        if values.dtype.kind == "b":
            values = values.astype(np.int64)
        if values.dtype.kind in "iu":
            return self._running(self._scatter(kind, values, window))
        return self._float_running(kind, values, window)

    def last(self, kind: Events, values: np.ndarray, fill=np.nan) -> np.ndarray:
        """Value of the latest event seen by each row; `fill` before the first one.

        Among events of one entity at the same instant, the one given last wins.
        """
        values = np.asarray(values)
        position, row = self._events_rows(kind, 0)
        # Latest event per row: order by (row, instant, position) and keep each row's last.
        order = np.lexsort((position, kind.ts[position], row))
        rows_sorted = row[order]
        is_last = np.r_[rows_sorted[1:] != rows_sorted[:-1], True][: len(rows_sorted)]
        source = np.full(len(self), -1, dtype=np.int64)
        source[rows_sorted[is_last]] = position[order][is_last]
        # Carry the latest source forward within each entity: the latest row up to each
        # one that has a source, if it belongs to the same entity.
        latest = np.maximum.accumulate(np.where(source >= 0, np.arange(len(self)), -1))
        seen = (latest >= 0) & (latest >= self._entity_start)
        dtype = np.result_type(values.dtype, np.asarray(fill).dtype)
        out = np.full(len(self), fill, dtype=dtype)
        out[seen] = values[source[latest[seen]]]
        return out

    def first(self, kind: Events, values: np.ndarray, fill=np.nan) -> np.ndarray:
        """Value of the earliest event seen by each row; `fill` before it is seen."""
        order = np.lexsort((kind.ts, kind.entity))
        entity = kind.entity[order]
        is_first = np.r_[True, entity[1:] != entity[:-1]][: len(entity)]
        earliest = Events(entity[is_first], kind.ts[order][is_first], {})
        return self.last(earliest, np.asarray(values)[order][is_first], fill=fill)


def _check_packable(entity: np.ndarray, second: np.ndarray) -> None:
    """Refuse rows a key cannot hold rather than mixing up entities."""
    if not len(entity):
        return
    if entity.min() < 0 or entity.max() > MAX_ENTITY:
        raise ValueError(f"grid entities must lie in 0..{MAX_ENTITY}")
    if second.min() < 0 or second.max() > MAX_SECOND:
        raise ValueError("grid rows must lie between 1970 and 2242 (seconds fit 33 bits)")
