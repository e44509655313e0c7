"""Scoring by id: champions from the MLflow registry, features from the Feast online store.

`ServedModel` wraps a registry champion's `CalibratedModel` for fast use: the input matrix is
the model's own encoding (`models.served.encoding.FeatureLayout`, the one training fitted
on), built from a frame or straight from feature values, so one id costs a dict walk and a
booster call instead of a pandas round trip. Decision-time features come from
`features.build.derived`: `add_time_features`, the function training used, for frames and
its one-row form `derive_record` per request.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract.schema import CONTACT_REASONS
from models.served import registry
from models.served.calibration import calibrate_by_arm, fast_calibration
from models.served.classifier import CalibratedModel, boosted_probability, offset_log_odds
from models.served.decisions import DecisionKey, DecisionMemo
from models.served.reasons import reason_codes, top_reasons
from models.served.single_row import RowPredictor
from models.served.uplift import UpliftModel
from models.served.window import WindowModel

# One OpenMP thread per call: a request scores a handful of rows, and on a shared 2-core
# machine more threads busy-wait against each other (see training.fit.DEFAULT_PARAMS).
PREDICT_THREADS = 1
# Calibrated probability → band, for people reading a score.
BANDS = ((0.5, "high"), (0.2, "medium"), (0.0, "low"))


def band(probability: float) -> str:
    """The band a calibrated probability falls in."""
    return next(name for floor, name in BANDS if probability >= floor)


@dataclass
class ServedModel:
    """A registry champion, ready to score rows of feature values.

    Attributes:
        name: Registered model name.
        version: Registry version.
        aliases: The version's aliases.
        model: The calibrated model.
        champion: How it was loaded: its run, its local copy, and why the copy serves
            where the registry's champion could not (`models.served.registry.Champion`).
        memo_rows: How many rows' contributions `request_contributions` keeps
            (`models.served.decisions.DecisionMemo`; 0: none).
    """

    name: str
    version: str
    aliases: list[str]
    model: CalibratedModel
    champion: registry.Champion | None = None
    memo_rows: int = 0

    def __post_init__(self) -> None:
        self._calibrate = fast_calibration(self.model.calibrator)
        booster, trees = self.model.booster, self.model.best_iteration
        self._raw = RowPredictor(booster, trees, num_threads=PREDICT_THREADS)
        self._contributions = RowPredictor(
            booster, trees, contributions=True, num_threads=PREDICT_THREADS
        )
        self.memo = None
        if self.memo_rows > 0:
            key = DecisionKey(self.model.booster, self.model.best_iteration)
            self.memo = DecisionMemo(key, self.memo_rows)
        arms = self.model.arm_calibration
        self._arm_maps = None
        if arms is not None:
            self._arm_maps = tuple(
                None if c is None else fast_calibration(c)
                for c in (arms.control_calibrator, arms.treated_calibrator)
            )

    def calibrate(self, raw: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities of raw ones; a model calibrated per arm reads each row's
        arm from its input matrix `x`.

        Raises:
            ValueError: The model is calibrated per arm and `x` is not given.
        """
        arms = self.model.arm_calibration
        if arms is None:
            return self._calibrate(raw)
        if x is None:
            raise ValueError(f"{self.name} is calibrated per arm: its input matrix is needed")
        layout = self.model.layout
        control = arms.control_rows(layout.features, layout.codes[arms.feature], x)
        return calibrate_by_arm(raw, control, self._calibrate, *self._arm_maps)

    def ref(self):
        """The version as answers name it."""
        from serving.schemas import ModelRef

        return ModelRef(name=self.name, version=self.version)

    @property
    def features(self) -> tuple[str, ...]:
        """Input columns, in model order."""
        return self.model.layout.features

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Model input matrix of a frame (`FeatureLayout.matrix`)."""
        return self.model.layout.matrix(frame)

    def matrix_from_records(self, records: Sequence[dict]) -> np.ndarray:
        """Model input matrix of a few rows given as dicts (the per-request path)."""
        return self.model.layout.records_matrix(records)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of matrix rows."""
        model = self.model
        if model.offset is not None:
            raw = boosted_probability(
                model.booster, model.layout, x, model.best_iteration, model.offset
            )
            return self.calibrate(raw, x)
        return self.calibrate(self._raw(x), x)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP contributions (log-odds) of matrix rows, one column per feature, then bias
        (with the baseline's log-odds where the trees started from them)."""
        return self._with_offset(self._contributions(x), x)

    def request_contributions(self, x: np.ndarray) -> np.ndarray:
        """`contributions` of a request's rows, taken from the memo for rows whose decisions
        at every split were answered before (exactly the same values). The memo keeps the
        trees' part: an offset reads the rows' values, not only their splits."""
        if self.memo is None:
            return self.contributions(x)
        return self._with_offset(self.memo.rows(x, self._contributions), x)

    def _with_offset(self, contrib: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The trees' contributions with the model's offset added to the bias (a copy)."""
        offset = self.model.offset
        if offset is None:
            return contrib
        contrib = np.array(contrib, dtype=np.float64)
        contrib[:, -1] += offset_log_odds(offset, self.model.layout, x)
        return contrib

    def probability_from_contributions(
        self, contrib: np.ndarray, x: np.ndarray | None = None
    ) -> np.ndarray:
        """Calibrated probabilities from SHAP contributions, which add up to the raw
        log-odds: one booster call gives the score and its reasons (`x`, the rows' input
        matrix, is needed by a model calibrated per arm)."""
        return self.calibrate(1.0 / (1.0 + np.exp(-contrib.sum(axis=1))), x)

    def reasons(self, contrib: np.ndarray, records: Sequence[dict], k: int = 3) -> list:
        """The top-k reasons raising each row's score, in words (rows as dicts)."""
        features, words = self.features, self.model.words
        return [
            top_reasons(c, r, features, words, k) for c, r in zip(contrib, records, strict=True)
        ]

    def reasons_frame(
        self, contrib: np.ndarray, values: pd.DataFrame, k: int = 3, withheld: Collection[str] = ()
    ) -> list:
        """The same reasons for rows of a frame (`models.served.reasons.reason_codes`;
        `withheld` features are named without their value)."""
        frame = pd.DataFrame(contrib, columns=[*self.features, "bias"], index=values.index)
        values = values.reindex(columns=list(self.features))
        return reason_codes(frame, values, self.model.words, k, withheld=withheld)


@dataclass(frozen=True)
class ServedWindow:
    """A registry champion of a time-to-event model (`models.served.window.WindowModel`).

    Attributes:
        name: Registered model name.
        version: Registry version.
        aliases: The version's aliases.
        model: The window model.
        champion: How it was loaded (see `ServedModel`).
        memo_rows: How many request rows' booster outputs `memo` keeps
            (`models.served.decisions.DecisionMemo`; 0: none, `memo` is None). The
            boosters' outputs do not depend on the offsets, which may be published anew.
    """

    name: str
    version: str
    aliases: list[str]
    model: WindowModel
    champion: registry.Champion | None = None
    memo_rows: int = 0

    def __post_init__(self) -> None:
        memo = None
        if self.memo_rows > 0:
            memo = DecisionMemo(self.model.decision_key(), self.memo_rows)
        object.__setattr__(self, "memo", memo)

    @cached_property
    def _predictors(self) -> list[RowPredictor]:
        return [
            RowPredictor(booster, trees, num_threads=PREDICT_THREADS)
            for booster, trees in zip(self.model.boosters, self.model.best_iterations, strict=True)
        ]

    def above_anchor(self, x: np.ndarray) -> np.ndarray:
        """`WindowModel.above_anchor` of matrix rows `x`, a request's single row through
        LightGBM's single-row path (`models.served.single_row`)."""
        return np.column_stack([predict(x) for predict in self._predictors])

    def ref(self):
        """The version as answers name it."""
        from serving.schemas import ModelRef

        return ModelRef(name=self.name, version=self.version)


def load_champion(
    name: str, tracking_uri: str, copies: Path | None = None, memo_rows: int = 0
) -> ServedModel:
    """The registry's `champion` version of a classifier (with `copies`, through its local
    copy, or the last good copy where the registry's cannot load: `registry.load_champion`),
    keeping the contributions of `memo_rows` request rows (`ServedModel.memo_rows`).

    Raises:
        ModelUnavailableError: The model has no champion, and no local copy serves.
    """
    champion, model = registry.load_champion(name, tracking_uri, copies)
    return ServedModel(name, champion.version, sorted(champion.aliases), model, champion, memo_rows)


def load_window_champion(
    name: str, tracking_uri: str, copies: Path | None = None, memo_rows: int = 0
) -> ServedWindow:
    """The registry's `champion` version of a window model (see `load_champion`).

    Raises:
        ModelUnavailableError: The model has no champion, and no local copy serves.
    """
    champion, model = registry.load_champion(name, tracking_uri, copies)
    return ServedWindow(
        name, champion.version, sorted(champion.aliases), model, champion, memo_rows
    )


@dataclass(frozen=True)
class ServedUplift(ServedWindow):
    """A registry champion of the uplift model (`models.served.uplift.UpliftModel`)."""

    model: UpliftModel


def load_uplift_champion(name: str, tracking_uri: str, copies: Path | None = None) -> ServedUplift:
    """The registry's `champion` version of the uplift model (see `load_champion`).

    Raises:
        ModelUnavailableError: The model has no champion, and no local copy serves.
    """
    champion, model = registry.load_champion(name, tracking_uri, copies)
    return ServedUplift(name, champion.version, sorted(champion.aliases), model, champion)


# What the churn answer names when the customer never contacted service.
NO_CONTACT = "no_contact"


@lru_cache(maxsize=16)
def reason_positions(names: tuple[str, ...]) -> tuple[list[int], ...]:
    """Per reason of `CONTACT_REASONS`, the positions of its `contacts_<reason>_` columns
    among `names`; kept per column list, as a model's features do not change."""
    return tuple(
        [j for j, name in enumerate(names) if name.startswith(f"contacts_{reason}_")]
        for reason in CONTACT_REASONS
    )


def own_contact_reasons(values: pd.DataFrame) -> np.ndarray:
    """Which contact reasons each customer's own contact history holds.

    A reason counts when the customer has a contact of it in the longest trailing window the
    snapshot keeps, or when it is the reason of their latest contact.

    Args:
        values: Snapshot rows: `contacts_<reason>_<days>d` counts and `last_contact_reason`.

    Returns:
        Booleans, one row per customer, one column per reason of `CONTACT_REASONS`.
    """
    return ContactValues.of_frame(values).held()


@dataclass(frozen=True)
class ContactValues:
    """The contact columns of snapshot rows, all `driving_contact_reason` reads: the
    `contacts_<reason>_<days>d` counts as stored (numbers, None or anything else) and the
    latest contact's reason, from a frame (batch) or from dicts (a request), without
    building a frame for a request's row or two.

    Attributes:
        columns: The count columns, in the rows' order.
        counts: The counts as stored, objects, one row per customer.
        latest: Each customer's `last_contact_reason` (None where the rows have none).
    """

    columns: tuple[str, ...]
    counts: np.ndarray
    latest: np.ndarray

    @classmethod
    def of_frame(cls, values: pd.DataFrame) -> ContactValues:
        """The contact columns of a frame of snapshot rows."""
        columns = tuple(c for c in values.columns if c.startswith("contacts_"))
        latest = (
            values["last_contact_reason"].to_numpy(dtype=object)
            if "last_contact_reason" in values
            else np.full(len(values), None, dtype=object)
        )
        return cls(columns, values[list(columns)].to_numpy(dtype=object), latest)

    @classmethod
    def of_records(cls, records: Sequence[Mapping]) -> ContactValues:
        """The contact columns of rows given as dicts, with the first row's keys (the rows of
        one feature view share them)."""
        names = list(records[0]) if records else []
        columns = tuple(n for n in names if n.startswith("contacts_"))
        counts = np.array([[record.get(c) for c in columns] for record in records], dtype=object)
        latest = np.full(len(records), None, dtype=object)
        if "last_contact_reason" in names:
            latest[:] = [record.get("last_contact_reason") for record in records]
        return cls(columns, counts.reshape(len(records), len(columns)), latest)

    def __len__(self) -> int:
        return len(self.latest)

    def held(self) -> np.ndarray:
        """Booleans, one row per customer, one column per reason of `CONTACT_REASONS`: the
        reasons of the customer's own contacts (`own_contact_reasons`)."""
        rows = len(self)
        held = np.zeros((rows, len(CONTACT_REASONS)), dtype=bool)
        if self.columns and rows:
            try:  # numbers and None, as the stores hold them: NumPy converts them at once
                numbers = self.counts.astype(np.float64)
            except (TypeError, ValueError):
                flat = pd.Series(self.counts.ravel())
                numbers = pd.to_numeric(flat, errors="coerce").to_numpy(dtype=np.float64)
            # A count held when positive; NaN (missing) compares false, as zero would. One
            # product gives every reason's "any column positive" (a loop over reasons and
            # their columns cost most of a one-id churn answer's own time).
            positive = numbers.reshape(rows, len(self.columns)) > 0
            held = (positive.astype(np.float64) @ reason_membership(self.columns)) > 0
        held |= self.latest[:, None] == _REASONS
        return held


# `CONTACT_REASONS` as an object row, to compare a column of latest reasons with at once.
_REASONS = np.array(CONTACT_REASONS, dtype=object)[None, :]


@lru_cache(maxsize=16)
def reason_membership(names: tuple[str, ...]) -> np.ndarray:
    """Which of `names` are each reason's `contacts_<reason>_` columns: ones in a matrix of
    one row per name and one column per reason of `CONTACT_REASONS`."""
    membership = np.zeros((len(names), len(CONTACT_REASONS)))
    for r, own in enumerate(reason_positions(names)):
        membership[own, r] = 1.0
    return membership


@dataclass(frozen=True)
class _ContactPlan:
    """Where `driving_contact_reason` reads one model's contributions: per reason, the
    positions of its count columns (as one array when every reason has as many), and the
    latest contact reason's position (None when not a feature)."""

    positions: tuple[list[int], ...]
    stacked: np.ndarray | None
    latest: int | None


@lru_cache(maxsize=16)
def _contact_plan(features: tuple[str, ...]) -> _ContactPlan:
    positions = reason_positions(features)
    widths = {len(own) for own in positions}
    stacked = np.array(positions, dtype=np.intp) if len(widths) == 1 and 0 not in widths else None
    latest = features.index("last_contact_reason") if "last_contact_reason" in features else None
    return _ContactPlan(positions, stacked, latest)


def driving_contact_reason(
    contrib: np.ndarray, features: Sequence[str], values: pd.DataFrame | ContactValues
) -> list[str]:
    """Per customer, the reason of their own contacts that contributes most to the churn score
    (`NO_CONTACT` for a customer without contacts): the contributions of its contact counts
    plus, where it is the latest contact's reason, that feature's. A reason the customer
    never contacted about is never named, whatever the model makes of its zero counts.

    Args:
        contrib: SHAP contributions, one row per customer, columns in `features` order.
        features: The churn model's features.
        values: The customers' snapshot rows (or their `ContactValues`), aligned with
            `contrib`.
    """
    if not len(values):
        return []
    if isinstance(values, pd.DataFrame):
        values = ContactValues.of_frame(values)
    plan = _contact_plan(tuple(features))
    if plan.stacked is not None:
        # Every reason's columns in one gather, summed along the same axis as one at a time.
        sums = contrib[:, plan.stacked].sum(axis=2)
    else:
        sums = np.zeros((len(contrib), len(CONTACT_REASONS)))
        for r, columns in enumerate(plan.positions):
            if columns:
                sums[:, r] = contrib[:, columns].sum(axis=1)
    held = values.held()
    if plan.latest is not None and len(contrib):
        own = contrib[:, plan.latest]
        for i, reason in enumerate(values.latest):
            if reason in CONTACT_REASONS:
                sums[i, CONTACT_REASONS.index(reason)] += own[i]
    sums = np.where(held, sums, -np.inf)
    best = sums.argmax(axis=1) if len(contrib) else np.zeros(0, dtype=np.int64)
    named = held.any(axis=1).tolist()
    return [CONTACT_REASONS[j] if named[i] else NO_CONTACT for i, j in enumerate(best.tolist())]


def local_date(instant: pd.Timestamp, timezone: str | None) -> date:
    """The calendar date of an instant in a time zone (UTC when unknown)."""
    return pd.Timestamp(instant).tz_convert(timezone or "UTC").date()


@lru_cache(maxsize=4096)
def day_words(day: date) -> str:
    """A date as people read it: "Thu 1 Jan 2026" (the latest few thousand kept: a
    request's windows name a few dates near today)."""
    return f"{day:%a} {day.day} {day:%b} {day.year}"


def lost_words(row: Mapping, as_of: pd.Timestamp) -> str:
    """Why a parcel is taken for lost, in words: its promise and how long nothing was heard.

    Args:
        row: The parcel's feature row: `promised_epoch`, `last_scan_epoch`,
            `last_event_type` and `customer_timezone`.
        as_of: Decision instant.
    """
    zone = row.get("customer_timezone")
    last_scan = pd.Timestamp(float(row["last_scan_epoch"]), unit="s", tz="UTC")
    promised = pd.Timestamp(float(row["promised_epoch"]), unit="s", tz="UTC")
    silent_days = int((as_of - last_scan) / pd.Timedelta(days=1))
    kind = row.get("last_event_type")
    scan = "dispatch" if kind in (None, "none", "dispatch") else f"{kind} scan".replace("_", " ")
    return (
        f"Likely lost: promised for {day_words(local_date(promised, zone))}, and nothing "
        f"heard for {silent_days} days since the {scan} on "
        f"{day_words(local_date(last_scan, zone))}"
    )
