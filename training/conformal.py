"""Split-conformal calibration of prediction windows (conformalized quantile regression).

A quantile model's raw window [lo, hi] covers the stated share of outcomes only when the
model is right about the spread; on new data it usually is not (trees shrink the tails, the
world drifts). Conformalized quantile regression (Romano, Patterson and Candès, 2019) fixes
this with one number per group: on a calibration window that the quantile models did not
learn from, each row gets a conformity score — how far the window must be widened (positive)
or may be narrowed (negative) to hold its outcome — and the windows of new rows are widened
by the ⌈(n + 1)·coverage⌉-th smallest score. When calibration and new rows are exchangeable
this covers at least `coverage` of new outcomes, and at most `coverage + 1/(n + 1)`.

Two extensions used here:

- **Bucketed outcomes.** A customer reads a window of dates, not instants: an outcome
  counts as covered when its bucket (the local calendar day of the delivery) meets the
  window's buckets. With the outcome known to lie in [y_low, y_high), the row is covered by
  [lo − c, hi + c] mapped to buckets iff lo − c < y_high and hi + c ≥ y_low, so the score
  max(lo − y_high, y_low − hi) is again the smallest c that covers it; for a point outcome
  (y_low = y_high) it is the usual CQR score.
- **Outcomes never observed** (a lost parcel) score +inf: they count against coverage in
  calibration as they do in evaluation.
- **Groups** (Mondrian conformal): one offset per group (carrier) with enough calibration
  rows, so the coverage holds within each group and not only on average; smaller groups
  share the offset of all rows.

Under drift the calibration window stops being exchangeable with new rows (on Olist the
test period's deliveries run longer than any before) and one fixed offset under-covers.
`adaptive_offsets` therefore recalibrates as outcomes arrive, by adaptive conformal
inference (ACI; Gibbs and Candès, "Adaptive conformal inference under distribution
shift", NeurIPS 2021) on a recency window of scores:

- Each group (and all rows together) keeps the scores of its latest `recent_rows` outcomes
  and its own miss rate αₜ, which starts at 1 − coverage. A decision at instant t gets the
  offset ⌈(n + 1)(1 − αₜ)⌉-th smallest of the scores of outcomes known strictly before t.
- When an outcome becomes known (the parcel is delivered; a lost parcel once it is settled
  as lost) its score joins the window and αₜ₊₁ = αₜ + γ·(α − errₜ), with errₜ = 1 when the
  offset given to that decision missed it: a miss narrows the quantile's miss rate, so the
  next windows widen; a run of hits lets them narrow again. Updates come in the order
  outcomes arrive, not of decisions (delayed feedback), so no decision sees an outcome known
  only after it.
- Over any stretch of T updates the miss rate stays within (1 + γ)/(γ·T) of α whatever the
  drift (Gibbs and Candès, Proposition 4.1), as long as ACI may answer an infinite window
  when αₜ ≤ 0. A customer reads dates, so there the largest finite recent score stands in
  and αₜ is kept at ≥ −γ; the bound then holds while no outcome lies beyond everything seen
  recently, which is when it is needed least.
- γ = 0 gives a plain rolling split-conformal window over the latest `recent_rows`.

Why not MAPIE: its regressors refit or wrap an sklearn estimator and score point outcomes,
and its time-series ACI (`MapieTimeSeriesRegressor.adapt_conformal_inference`) updates
after each new point outcome in decision order: here the outcome is a date bucket, some
outcomes are censored and an outcome is known only days after its decision, in another
order. MAPIE is not in the lock either. The methods are a few lines, written out below.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from models.served.window import ALL_ROWS, ConformalOffsets

MIN_GROUP_ROWS = 200
# ACI's step γ: how fast the miss rate reacts (Gibbs and Candès use 0.005 to 0.05). On the
# simulated carrier slowdown every γ from 0.005 to 0.05 holds 0.90-0.91 coverage; on Olist's
# test months 0.02 gives 0.887 and 0.01 0.858 (0.02 was first tried there, so Olist's figure
# at it is optimistic).
ADAPTIVE_STEP = 0.02
# Scores an adaptive offset is the quantile of: the latest outcomes of each group.
RECENT_ROWS = 1000
SPLIT = "split"
ADAPTIVE = "adaptive"


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ⌈(n + 1)·coverage⌉-th smallest score: the split-conformal offset.

    Args:
        scores: Conformity scores of the calibration rows (+inf allowed).
        coverage: Stated coverage, in (0, 1).

    Returns:
        The offset; +inf when there are too few rows (or too many infinite scores) for the
        stated coverage.

    Raises:
        ValueError: `coverage` is not in (0, 1).
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    values = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(values) + 1) * coverage)
    if rank > len(values):
        return math.inf
    return float(values[rank - 1])


def window_scores(
    lo: np.ndarray, hi: np.ndarray, y_low: np.ndarray, y_high: np.ndarray
) -> np.ndarray:
    """Conformity scores of windows [lo, hi] for outcomes known to lie in [y_low, y_high).

    The smallest c with lo − c < y_high and hi + c ≥ y_low: how much the window must grow on
    both sides (negative: may shrink) to meet the outcome's bucket. A point outcome has
    y_low = y_high; an outcome never observed has y_low = +inf (score +inf).
    """
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    y_low = np.asarray(y_low, dtype=np.float64)
    y_high = np.asarray(y_high, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        scores = np.maximum(lo - y_high, y_low - hi)
    return np.where(np.isposinf(y_low), np.inf, scores)


def fit_offsets(
    scores: np.ndarray,
    coverage: float,
    groups: pd.Series | np.ndarray | None = None,
    min_rows: int = MIN_GROUP_ROWS,
) -> ConformalOffsets:
    """Offsets from the calibration rows' conformity scores, per group where it has enough.

    Args:
        scores: Conformity scores (`window_scores`) of the calibration window.
        coverage: Stated coverage.
        groups: Group of each row (Mondrian conformal); None for one offset.
        min_rows: Groups with fewer calibration rows use the all-rows offset.

    Raises:
        ValueError: No calibration rows.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        raise ValueError("no calibration rows to fit conformal offsets on")
    offsets = {ALL_ROWS: conformal_quantile(scores, coverage)}
    rows = {ALL_ROWS: len(scores)}
    if groups is not None:
        keys = pd.Series(np.asarray(groups, dtype=object)).astype("string").fillna("")
        for key, index in keys.groupby(keys, sort=True).groups.items():
            if len(index) >= min_rows:
                offsets[str(key)] = conformal_quantile(scores[np.asarray(index)], coverage)
                rows[str(key)] = len(index)
    return ConformalOffsets(coverage, offsets, rows)


@dataclass
class _Recent:
    """One group's latest scores and its ACI miss rate αₜ.

    The scores are also kept in order (`bisect`, missing values as +inf, where a sort
    would put them past every finite one too), so that the offset after each new outcome
    is one look-up instead of a sort of the recent rows: a replay asks for it at nearly
    every decision.
    """

    target: float
    recent_rows: int
    alpha: float = field(init=False)
    scores: deque = field(init=False)
    _offset: float | None = field(default=None, init=False)
    _ordered: list[float] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.alpha = self.target
        self.scores = deque(maxlen=self.recent_rows)

    def extend(self, scores: Iterable[float]) -> None:
        """Add saved scores (oldest first) without moving αₜ."""
        self.scores.extend(scores)
        self._ordered = None
        self._offset = None

    def offset(self) -> float:
        """The (1 − αₜ) conformal quantile of the recent scores (finite while any is)."""
        if self._offset is None:
            if self._ordered is None:
                self._ordered = sorted(_ordered_value(v) for v in self.scores)
            values = self._ordered
            finite = bisect.bisect_left(values, math.inf)
            rank = math.ceil((len(values) + 1) * (1.0 - self.alpha))
            if rank < 1:
                self._offset = float(values[0]) if finite else 0.0
            elif rank > len(values) or not math.isfinite(values[rank - 1]):
                self._offset = float(values[finite - 1]) if finite else math.inf
            else:
                self._offset = float(values[rank - 1])
        return self._offset

    def learn(self, score: float, offset: float | None, step: float) -> None:
        """Add a known outcome's score; move αₜ by the miss of the offset it was given."""
        if self._ordered is not None:
            if len(self.scores) == self.scores.maxlen:
                oldest = _ordered_value(self.scores[0])
                del self._ordered[bisect.bisect_left(self._ordered, oldest)]
            bisect.insort(self._ordered, _ordered_value(score))
        self.scores.append(score)
        if offset is not None:
            missed = float(score > offset)
            self.alpha = max(self.alpha + step * (self.target - missed), -step)
        self._offset = None


def _ordered_value(score: float) -> float:
    """A score as `_Recent` orders it: a missing one (NaN) as +inf."""
    return math.inf if math.isnan(score) else float(score)


@dataclass(frozen=True)
class AciState:
    """Everything ACI needs to go on from where it stopped.

    Attributes:
        coverage: Stated coverage.
        states: Group → its latest scores and miss rate (`ALL_ROWS`: all rows').
        pending: Decision → the offsets (own group's, all rows') it was given, for decisions
            whose outcome was not yet known: its miss moves αₜ once it is.
        consumed_until: Outcomes known up to this instant are in `states` (None: not set).
        step: ACI's γ.
        recent_rows: Latest scores each state keeps.
        min_rows: Known scores a group needs before it uses its own offset.
    """

    coverage: float
    states: dict[str, _Recent]
    pending: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    consumed_until: pd.Timestamp | None = None
    step: float = ADAPTIVE_STEP
    recent_rows: int = RECENT_ROWS
    min_rows: int = MIN_GROUP_ROWS

    def offsets(self) -> ConformalOffsets:
        """The offsets a model serves next: every group with enough scores, and all rows'.

        Raises:
            ValueError: No outcome is known yet.
        """
        latest, rows, alphas = {}, {}, {}
        for key, state in sorted(self.states.items()):
            if (key == ALL_ROWS and state.scores) or len(state.scores) >= self.min_rows:
                latest[key], rows[key], alphas[key] = state.offset(), len(state.scores), state.alpha
        if ALL_ROWS not in latest:
            raise ValueError("no outcome is known: no adaptive offset to serve")
        return ConformalOffsets(self.coverage, latest, rows, ADAPTIVE, alphas)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form (an infinite score or offset as the string "inf")."""

        def number(value: float | None) -> float | str | None:
            return value if value is None or math.isfinite(value) else "inf"

        return {
            "coverage": self.coverage,
            "step": self.step,
            "recent_rows": self.recent_rows,
            "min_rows": self.min_rows,
            "consumed_until": None
            if self.consumed_until is None
            else self.consumed_until.isoformat(),
            "states": {
                key: {"alpha": state.alpha, "scores": [number(v) for v in state.scores]}
                for key, state in sorted(self.states.items())
            },
            "pending": {
                key: [number(own), number(overall)]
                for key, (own, overall) in sorted(self.pending.items())
            },
        }

    @staticmethod
    def from_dict(data) -> AciState:
        """Inverse of `to_dict`."""

        def number(value) -> float | None:
            return None if value is None else float(value)

        coverage, recent_rows = float(data["coverage"]), int(data["recent_rows"])
        states = {}
        for key, saved in data["states"].items():
            state = _Recent(1.0 - coverage, recent_rows)
            state.alpha = float(saved["alpha"])
            state.extend(float(v) for v in saved["scores"])
            states[key] = state
        until = data.get("consumed_until")
        return AciState(
            coverage,
            states,
            {
                key: (number(own), number(overall))
                for key, (own, overall) in data["pending"].items()
            },
            None if until is None else pd.Timestamp(until),
            float(data["step"]),
            recent_rows,
            int(data["min_rows"]),
        )


def start_state(
    coverage: float,
    *,
    step: float = ADAPTIVE_STEP,
    recent_rows: int = RECENT_ROWS,
    min_rows: int = MIN_GROUP_ROWS,
) -> AciState:
    """ACI before any outcome: every group's miss rate at 1 − coverage, no scores.

    Raises:
        ValueError: `coverage` is not in (0, 1) or `step` is negative.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    if step < 0:
        raise ValueError(f"step must be ≥ 0, got {step}")
    return AciState(
        coverage, {ALL_ROWS: _Recent(1.0 - coverage, recent_rows)}, {}, None, step,
        recent_rows, min_rows,
    )  # fmt: skip


def replay(
    state: AciState,
    scores: np.ndarray,
    decision_ts: pd.Series | np.ndarray,
    known_ts: pd.Series | np.ndarray,
    groups: pd.Series | np.ndarray | None,
    decisions: list[str] | None = None,
) -> np.ndarray:
    """Move `state` through rows' decisions and outcomes in time (the ACI update).

    A decision (NaT: not replayed, decided before the state's start) takes its group's
    offset (all rows' while its group has fewer than `min_rows` scores) from the outcomes
    known strictly before it; an outcome (NaT: not known) adds its score to its group's and
    all rows' state, and moves each αₜ by the miss of the offset its decision was given
    (kept in `state.pending` between replays; no move for a decision never given one).
    Changes `state` in place.

    Args:
        state: Where ACI stands (`start_state`, or a saved one).
        scores: Conformity scores (`window_scores`), +inf for an outcome never observed.
        decision_ts: Each row's decision instant.
        known_ts: When each row's outcome became known.
        groups: Group of each row; None for one state.
        decisions: Each row's name in `state.pending` (default: its position).

    Returns:
        The offset each replayed decision got (inf where none, or no outcome known yet).

    Raises:
        ValueError: The lengths differ.
    """
    scores = np.asarray(scores, dtype=np.float64)
    decided = pd.to_datetime(pd.Series(np.asarray(decision_ts)), utc=True)
    known = pd.to_datetime(pd.Series(np.asarray(known_ts)), utc=True)
    names = [str(i) for i in range(len(scores))] if decisions is None else list(decisions)
    if not len(scores) == len(decided) == len(known) == len(names):
        raise ValueError("scores, decision_ts and known_ts must have one value per row")
    keys = (
        [ALL_ROWS] * len(scores)
        if groups is None
        else list(pd.Series(np.asarray(groups, dtype=object)).astype("string").fillna(""))
    )
    target, step, states, given = 1.0 - state.coverage, state.step, state.states, state.pending
    # Events in time; at one instant decisions (0) come before outcomes (1): "known before".
    decided_ns = decided.to_numpy(dtype="datetime64[ns]")
    known_ns = known.to_numpy(dtype="datetime64[ns]")
    made = np.flatnonzero(~np.isnat(decided_ns))
    arrived = np.flatnonzero(~np.isnat(known_ns))
    times = np.concatenate([decided_ns[made].astype(np.int64), known_ns[arrived].astype(np.int64)])
    kinds = np.concatenate([np.zeros(len(made), dtype=np.int8), np.ones(len(arrived), np.int8)])
    rows_of = np.concatenate([made, arrived])
    order = np.lexsort((kinds, times))
    offsets = np.full(len(scores), math.inf)
    for kind, row in zip(kinds[order].tolist(), rows_of[order].tolist(), strict=True):
        key = keys[row]
        group = states.setdefault(key, _Recent(target, state.recent_rows))
        everyone = states[ALL_ROWS]
        if kind == 0:
            # A group's αₜ learns from its first outcome on, so it is warm once the group
            # has enough scores to use its own offset.
            own = group.offset() if group.scores else None
            overall = everyone.offset() if everyone.scores else None
            given[names[row]] = (own, overall)
            chosen = own if len(group.scores) >= state.min_rows else overall
            offsets[row] = math.inf if chosen is None else chosen
        else:
            own, overall = given.pop(names[row], (None, None))
            if group is not everyone:
                group.learn(scores[row], own, step)
            everyone.learn(scores[row], overall, step)
    return offsets


@dataclass(frozen=True)
class AdaptiveWindows:
    """What `adaptive_offsets` gives.

    Attributes:
        offsets: The offset each row's decision got (inf where no outcome was known yet).
        latest: The offsets of every group after the last known outcome, with its recent
            rows, method `ADAPTIVE` and each group's αₜ: what a model serves next.
        state: Where ACI stands after the last outcome (to go on from there).
    """

    offsets: np.ndarray
    latest: ConformalOffsets
    state: AciState


def adaptive_offsets(
    scores: np.ndarray,
    decision_ts: pd.Series | np.ndarray,
    known_ts: pd.Series | np.ndarray,
    coverage: float,
    groups: pd.Series | np.ndarray | None = None,
    *,
    step: float = ADAPTIVE_STEP,
    recent_rows: int = RECENT_ROWS,
    min_rows: int = MIN_GROUP_ROWS,
) -> AdaptiveWindows:
    """Offsets that adapt as outcomes arrive (ACI on recent scores, see the module).

    Rows are replayed in time (`replay` from `start_state`): a decision takes the offset of
    its group's state (of all rows' while its group has fewer than `min_rows` known scores)
    built only from outcomes known strictly before its instant; an outcome updates its
    group's and all rows' state when it becomes known. Rows are usually a calibration window
    followed by the rows to evaluate, so that the states are warm when the latter begin.

    Args:
        scores: Conformity scores (`window_scores`), +inf for an outcome never observed.
        decision_ts: Each row's decision instant.
        known_ts: When each row's outcome became known (NaT: not within the data).
        coverage: Stated coverage.
        groups: Group of each row (Mondrian conformal); None for one state.
        step: ACI's γ (0: a rolling window without adaptation).
        recent_rows: Latest scores each state keeps.
        min_rows: Known scores a group needs before it uses its own offset.

    Raises:
        ValueError: `coverage` is not in (0, 1), `step` is negative, the lengths differ or
            no outcome is known.
    """
    state = start_state(coverage, step=step, recent_rows=recent_rows, min_rows=min_rows)
    offsets = replay(state, scores, decision_ts, known_ts, groups)
    known = pd.to_datetime(pd.Series(np.asarray(known_ts)), utc=True)
    # Decisions whose outcome is not within the rows never learn: nothing is pending.
    state = replace(state, pending={}, consumed_until=known.max() if known.notna().any() else None)
    return AdaptiveWindows(offsets, state.offsets(), state)
