"""Time-based train / validation / test windows by the label event time, never shuffled.

A model is used on decisions after the data it learned from, so it is judged that way: the
training window comes first, then validation (early stopping, calibration), then test. Rows
sharing one event instant always land in the same window (a monthly snapshot is one
decision batch), and windows that overlap or hold no rows are refused.

Purging: a label becomes known some time after its decision (a parcel's outcome at delivery
or at the promise, churn 90 days later). With `purge=True`, rows of an earlier window whose
label was not yet known when the next window starts are dropped, so nothing the model
learns from was unknowable at the moment it would be deployed.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.instants import utc_instant
from models.spec import SplitConfig, SplitError

log = logging.getLogger(__name__)

WINDOWS = ("train", "validation", "test")


@dataclass(frozen=True)
class Window:
    """One window: its rows (index labels of the input frame) and its time span."""

    name: str
    start: pd.Timestamp
    end: pd.Timestamp
    index: pd.Index
    purged: int = 0

    @property
    def rows(self) -> int:
        """Number of rows in the window."""
        return len(self.index)


@dataclass(frozen=True)
class TimeSplit:
    """Three windows in time order."""

    train: Window
    validation: Window
    test: Window

    def windows(self) -> tuple[Window, Window, Window]:
        """The windows in time order."""
        return self.train, self.validation, self.test

    def summary(self) -> dict[str, str | int]:
        """Flat description of the split, for logging as run parameters."""
        out: dict[str, str | int] = {}
        for w in self.windows():
            out[f"split_{w.name}_start"] = w.start.isoformat()
            out[f"split_{w.name}_end"] = w.end.isoformat()
            out[f"split_{w.name}_rows"] = w.rows
            out[f"split_{w.name}_purged"] = w.purged
        return out


def check_windows(windows: tuple[Window, ...], times: pd.Series) -> None:
    """Refuse empty, overlapping or out-of-order windows.

    Args:
        windows: Windows in their intended time order.
        times: The event time of every row, indexed like the windows' `index`.

    Raises:
        SplitError: A window is empty, or one holds an event at or before the latest event
            of an earlier window.
    """
    for w in windows:
        if w.rows == 0:
            raise SplitError(
                f"the {w.name} window [{w.start}, {w.end}] holds no label events; "
                "change the fractions or boundaries, or provide more data"
            )
    for earlier, later in itertools.pairwise(windows):
        last = times.loc[earlier.index].max()
        first = times.loc[later.index].min()
        if first <= last:
            raise SplitError(
                f"the {later.name} window starts at {first}, not after the {earlier.name} "
                f"window ends at {last}: a {later.name} label event would precede training "
                "data (leakage)"
            )
    seen: set = set()
    for w in windows:
        overlap = seen.intersection(w.index)
        if overlap:
            raise SplitError(f"{len(overlap)} rows are in more than one window ({w.name})")
        seen.update(w.index)


def _sorted_instants(times: pd.Series) -> np.ndarray:
    """UTC instants, sorted, as `datetime64[ns]` values (naive: read with `utc_instant`).

    Not `Series.to_numpy()`: on a time-zone-aware column it builds one `Timestamp` object per
    row, which at millions of rows costs seconds and gigabytes.
    """
    naive = times.dt.tz_convert(None) if times.dt.tz is not None else times
    return np.sort(naive.to_numpy(dtype="datetime64[ns]"))


def _boundaries(times: pd.Series, fractions: tuple[float, float, float]) -> list[pd.Timestamp]:
    """Validation and test start instants: the row quantiles, moved onto distinct instants."""
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.shape != (3,) or (shares <= 0).any():
        raise SplitError(f"fractions must be three positive numbers, got {fractions}")
    shares = shares / shares.sum()
    ordered = _sorted_instants(times)
    cuts = []
    for share in np.cumsum(shares)[:2]:
        position = min(round(share * len(ordered)), len(ordered) - 1)
        # The window starts at the first row of the instant found there, so rows sharing an
        # instant (one snapshot date) stay together.
        cuts.append(utc_instant(ordered[max(position, 0)]))
    return cuts


def time_split(
    frame: pd.DataFrame,
    config: SplitConfig,
    time_col: str = "event_timestamp",
    label_known_col: str | None = "label_ts",
) -> TimeSplit:
    """Cut label events into train, validation and test windows by event time.

    Args:
        frame: Label events, one per row; any index.
        config: Fractions or boundaries, and whether to purge.
        time_col: The decision instant of each row.
        label_known_col: When each row's label became known; needed when purging.

    Returns:
        The three windows (their row index labels and spans).

    Raises:
        SplitError: Windows would be empty or out of order, or purging lacks its column.
    """
    if frame.empty:
        raise SplitError("no label events to split")
    times = pd.to_datetime(frame[time_col], utc=True)
    if config.boundaries is not None:
        cuts = [utc_instant(b) for b in config.boundaries]
        if not cuts[0] < cuts[1]:
            raise SplitError(
                f"the validation window must start before the test window: {cuts[0]} >= {cuts[1]}"
            )
    else:
        cuts = _boundaries(times, config.fractions)
    start, end = times.min(), times.max()
    edges = [start, cuts[0], cuts[1], end]
    masks = [times < cuts[0], (times >= cuts[0]) & (times < cuts[1]), times >= cuts[1]]
    purged = [0, 0, 0]
    if config.purge:
        if label_known_col is None or label_known_col not in frame:
            raise SplitError(f"purging needs the label-known column {label_known_col!r}")
        known = pd.to_datetime(frame[label_known_col], utc=True)
        for i in (0, 1):
            late = masks[i] & (known >= cuts[i])
            purged[i] = int(late.sum())
            masks[i] = masks[i] & ~late
    windows = []
    for i, name in enumerate(WINDOWS):
        index = frame.index[masks[i].to_numpy()]
        windows.append(Window(name, edges[i], edges[i + 1], index, purged[i]))
    check_windows(tuple(windows), times)
    split = TimeSplit(*windows)
    log.info(
        "split: %s",
        ", ".join(f"{w.name} {w.rows} rows from {w.start} (purged {w.purged})" for w in windows),
    )
    return split


@dataclass(frozen=True)
class Fold:
    """One fold of a time-ordered cross-validation: rows to fit on, rows to stop early on,
    and the later rows it is scored on (index labels of the input frame)."""

    train: pd.Index
    validation: pd.Index
    test: pd.Index
    start: pd.Timestamp


def expanding_folds(
    frame: pd.DataFrame,
    end: pd.Timestamp,
    folds: int = 4,
    first_share: float = 0.4,
    validation_share: float = 0.2,
    time_col: str = "event_timestamp",
    label_known_col: str = "label_ts",
) -> list[Fold]:
    """Expanding-window folds over the rows before `end` (the test window's start, which the
    folds never touch).

    The period after the first `first_share` of rows is cut into `folds` blocks of equal row
    count; each block is scored by a model fitted on the rows whose label was known before
    the block starts, the latest `validation_share` of those stopping its trees (training
    rows whose label was unknown when validation starts are purged).

    Args:
        frame: Label events, one per row.
        end: Rows at or after it are left out.
        folds: Number of blocks scored.
        first_share: Share of the rows that only ever train.
        validation_share: Share of each fold's earlier rows used for early stopping.
        time_col: The decision instant of each row.
        label_known_col: When each row's label became known.

    Raises:
        SplitError: A fold would have no training, validation or scored rows.
    """
    times = pd.to_datetime(frame[time_col], utc=True)
    known = pd.to_datetime(frame[label_known_col], utc=True)
    before = times < utc_instant(end)
    ordered = _sorted_instants(times[before])
    if len(ordered) == 0:
        raise SplitError(f"no rows before {end} to cross-validate on")
    positions = np.linspace(first_share, 1.0, folds + 1)[:-1] * len(ordered)
    edges = [utc_instant(ordered[int(p)]) for p in positions] + [utc_instant(end)]
    out = []
    for start, stop in itertools.pairwise(edges):
        scored = before & (times >= start) & (times < stop)
        earlier = before & (known < start)
        fitted_on = _sorted_instants(times[earlier])
        cut = start
        if len(fitted_on):
            cut = utc_instant(fitted_on[int((1 - validation_share) * len(fitted_on))])
        validation = earlier & (times >= cut)
        train = earlier & (times < cut) & (known < cut)
        fold = Fold(frame.index[train], frame.index[validation], frame.index[scored], start)
        if min(len(fold.train), len(fold.validation), len(fold.test)) == 0:
            raise SplitError(f"the fold from {start} has an empty window; use fewer folds")
        out.append(fold)
    return out
