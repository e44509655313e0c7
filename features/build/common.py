"""Shared pieces of feature building: raw tables as frames, timestamps, calendar flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S


def spans(total: int, size: int) -> list[tuple[int, int]]:
    """Positions 0..total-1 cut into (lo, hi) spans of at most `size`; one empty span when
    `total` is 0, so that a build of nothing still yields its (empty) table."""
    return [(lo, min(lo + size, total)) for lo in range(0, max(total, 1), size)]


def frame(tables: dict[str, pa.Table], name: str, columns: list[str] | None = None):
    """A raw table as a pandas frame (timestamps as UTC datetimes), or None when absent."""
    table = tables.get(name)
    if table is None:
        return None
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    return table.to_pandas()


def us(series) -> np.ndarray:
    """Timestamps (pandas or Arrow) as int64 microseconds since the epoch; missing values
    become INT64 min."""
    if isinstance(series, pa.ChunkedArray | pa.Array):
        as_us = series.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        return np.asarray(as_us.fill_null(np.iinfo(np.int64).min), dtype=np.int64)
    values = series.to_numpy(dtype="datetime64[us]", na_value=np.datetime64("NaT"))
    return values.astype(np.int64)


def is_missing_us(values: np.ndarray) -> np.ndarray:
    return values == np.iinfo(np.int64).min


def epoch_s(values_us: np.ndarray) -> np.ndarray:
    """Microseconds as float epoch seconds, NaN where missing."""
    out = values_us.astype(np.float64) / US_PER_S
    out[is_missing_us(values_us)] = np.nan
    return out


def from_us(values_us: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(values_us, unit="us", utc=True))


def peak_season(values_us: np.ndarray) -> np.ndarray:
    """Black Friday week through Christmas Eve: the period carriers and warehouses congest."""
    dates = pd.DatetimeIndex(pd.to_datetime(values_us, unit="us", utc=True))
    month, day = dates.month.to_numpy(), dates.day.to_numpy()
    return ((month == 11) & (day >= 20)) | ((month == 12) & (day <= 24))


def next_midnight_us(values_us: np.ndarray) -> np.ndarray:
    """The first UTC midnight strictly after each instant: when a daily snapshot sees it."""
    return (values_us // US_PER_DAY + 1) * US_PER_DAY


def to_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """Feature columns as an Arrow table: `event_ts` from microseconds to UTC instants,
    NaN to null, object arrays to strings."""
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, pa.Array | pa.ChunkedArray):
            arrays[name] = values
            continue
        values = np.asarray(values)
        if name == "event_ts":
            arrays[name] = pa.array(values.astype(np.int64), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            )
        elif values.dtype == object:
            arrays[name] = pa.array(values, pa.string(), from_pandas=True)
        else:
            arrays[name] = pa.array(values, from_pandas=True)
    return pa.table(arrays)


def codes_in(values: pa.ChunkedArray | pa.Array, lookup: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Position of each value in `lookup`, -1 where absent or null."""
    if isinstance(lookup, pa.ChunkedArray):
        lookup = lookup.combine_chunks()
    position = pc.index_in(values, value_set=lookup)
    return np.asarray(position.fill_null(-1), dtype=np.int64)


def search_sorted(haystack: np.ndarray, needles: np.ndarray, side: str) -> np.ndarray:
    """`np.searchsorted`, with the needles sorted first when they are not: a binary search
    for needles in order walks memory forward and runs several times faster."""
    if len(needles) < 2 or bool(np.all(needles[1:] >= needles[:-1])):
        return np.searchsorted(haystack, needles, side=side)
    order = np.argsort(needles, kind="stable")
    out = np.empty(len(needles), dtype=np.int64)
    out[order] = np.searchsorted(haystack, needles[order], side=side)
    return out
