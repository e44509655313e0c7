"""Daily snapshot grids: running counts, sums and latest values per entity and day.

A grid holds one row per (entity, day) on which some value may change. A snapshot stamped at
midnight D sees every event stamped strictly before D, so an event first shows in the row at
the midnight after it, and leaves a trailing W-day window at that midnight plus W days. Both
rows exist by construction (see `SnapshotGrid.build`), so every feature is a running sum of
per-row increments: one scatter of the events onto rows, then one cumulative sum per entity.
The cost is linear in events plus rows, whatever the number of features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.build.common import US_PER_DAY, is_missing_us, next_midnight_us

DAY_BITS = 20  # days since the epoch fit in 20 bits until the year 4840


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

    def days(self) -> np.ndarray:
        """Day number of the first snapshot that sees each event."""
        return next_midnight_us(self.ts) // US_PER_DAY


@dataclass(frozen=True)
class SnapshotGrid:
    """Rows (entity, day), sorted, with the position where each entity's rows start."""

    entity: np.ndarray
    day: np.ndarray
    key: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    # (id of an Events, day offset) → (that Events, its rows): many features scatter the same
    # events, and the Events is kept so its id cannot be reused while cached.
    _rows: dict = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def build(
        first_days: list[tuple[np.ndarray, np.ndarray]],
        events: list[tuple[Events, tuple[int, ...]]],
        end_day: int,
    ) -> SnapshotGrid:
        """Rows for every day a value may change, up to and including `end_day`.

        Args:
            first_days: (entity, day) pairs that must have a row, e.g. the signup day.
            events: Event kinds with the trailing windows (days) computed over them.
            end_day: Last day to keep.
        """
        entity_parts = [e for e, _ in first_days]
        day_parts = [d for _, d in first_days]
        for kind, windows in events:
            day = kind.days()
            for offset in (0, *windows):
                entity_parts.append(kind.entity)
                day_parts.append(day + offset)
        entity = np.concatenate(entity_parts).astype(np.int64)
        day = np.concatenate(day_parts).astype(np.int64)
        keep = day <= end_day
        # Sort then drop repeats: faster than hashing for tens of millions of int64 keys.
        key = np.sort((entity[keep] << DAY_BITS) | day[keep])
        key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key
        entity, day = key >> DAY_BITS, key & ((1 << DAY_BITS) - 1)
        starts = np.flatnonzero(np.r_[True, entity[1:] != entity[:-1]])
        sizes = np.diff(np.r_[starts, len(entity)])
        return SnapshotGrid(entity, day, key, starts, sizes)

    def __len__(self) -> int:
        return len(self.key)

    @property
    def ts_us(self) -> np.ndarray:
        return self.day * US_PER_DAY

    def rows(self, entity: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Row of each (entity, day), -1 when the day lies beyond the grid's end."""
        key = (np.asarray(entity, dtype=np.int64) << DAY_BITS) | np.asarray(day, dtype=np.int64)
        position = np.searchsorted(self.key, key)
        found = position < len(self.key)
        found[found] = self.key[position[found]] == key[found]
        return np.where(found, position, -1)

    def _events_rows(self, kind: Events, offset: int) -> np.ndarray:
        cached = self._rows.get((id(kind), offset))
        if cached is None:
            cached = (kind, self.rows(kind.entity, kind.days() + offset))
            self._rows[(id(kind), offset)] = cached
        return cached[1]

    def _running(self, increments: np.ndarray) -> np.ndarray:
        """Per-entity running sum of per-row increments.

        Integers: one pass over all rows, minus what the entities before each one summed
        (exact). Floats: summed per entity, so a value never depends on other entities'
        values or on how customers are cut into chunks.
        """
        if not len(increments):
            return increments
        if increments.dtype.kind == "f":
            return (
                pd.Series(increments)
                .groupby(np.repeat(self.starts, self.sizes))
                .cumsum()
                .to_numpy()
            )
        total = np.cumsum(increments)
        before = total[self.starts] - increments[self.starts]
        return total - np.repeat(before, self.sizes)

    def _scatter(self, kind: Events, values, window: int | None) -> np.ndarray:
        integer = values is None or np.asarray(values).dtype.kind in "iub"
        weights = None if values is None else np.nan_to_num(np.asarray(values, dtype=np.float64))
        increments = np.zeros(len(self), dtype=np.int64 if integer else np.float64)
        for offset, sign in ((0, 1), (window, -1)) if window else ((0, 1),):
            row = self._events_rows(kind, offset)
            ok = row >= 0
            w = None if weights is None else weights[ok] * sign
            counts = np.bincount(row[ok], weights=w, minlength=len(self))
            if weights is None:
                counts = counts * sign
            increments = increments + counts.astype(increments.dtype)
        return increments

    def count(self, kind: Events, window: int | None = None) -> np.ndarray:
        """Events seen by each row (within the trailing `window` days when given)."""
        return self._running(self._scatter(kind, None, window))

    def total(self, kind: Events, values: np.ndarray, window: int | None = None) -> np.ndarray:
        """Sum of `values` over the events seen by each row; NaN adds nothing."""
        values = np.asarray(values)
        if values.dtype.kind == "b":
            values = values.astype(np.int64)
        return self._running(self._scatter(kind, values, window))

    def last(self, kind: Events, values: np.ndarray, fill=np.nan) -> np.ndarray:
        """Value of the latest event seen by each row; `fill` before the first one.

        Among events of one entity at the same instant, the one given last wins.
        """
        values = np.asarray(values)
        row = self._events_rows(kind, 0)
        ok = row >= 0
        # Latest event per row: order by (row, instant, position) and keep each row's last.
        position = np.arange(len(row))[ok]
        order = np.lexsort((position, kind.ts[ok], row[ok]))
        rows_sorted = row[ok][order]
        is_last = np.r_[rows_sorted[1:] != rows_sorted[:-1], True][: len(rows_sorted)]
        source = np.full(len(self), -1, dtype=np.int64)
        source[rows_sorted[is_last]] = position[order][is_last]
        # Carry the latest source forward within each entity.
        carried = pd.Series(np.where(source >= 0, source, np.nan)).groupby(self.entity).ffill()
        carried = carried.to_numpy()
        seen = ~np.isnan(carried)
        dtype = np.result_type(values.dtype, np.asarray(fill).dtype)
        out = np.full(len(self), fill, dtype=dtype)
        out[seen] = values[carried[seen].astype(np.int64)]
        return out

    def first(self, kind: Events, values: np.ndarray, fill=np.nan) -> np.ndarray:
        """Value of the earliest event seen by each row; `fill` before it is seen."""
        order = np.lexsort((kind.ts, kind.entity))
        entity = kind.entity[order]
        is_first = np.r_[True, entity[1:] != entity[:-1]][: len(entity)]
        earliest = Events(entity[is_first], kind.ts[order][is_first], {})
        return self.last(earliest, np.asarray(values)[order][is_first], fill=fill)
