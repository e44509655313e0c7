"""Windows for a future instant: quantile boosters, conformal offsets and local dates.

The artefact of a time-to-event model (the delivery estimate): three LightGBM quantile
boosters on the log of the hours from the decision instant to the event, conformal offsets
per group (fitted by `training.conformal`), and the conversion of instants into calendar
dates in each customer's time zone. Working in log hours keeps every prediction after the
decision instant and makes the spread proportional to the time left, as transit times are.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from features.instants import UTC, utc_instant, utc_series
from models.served.decisions import DecisionKey, DecisionMemo
from models.served.encoding import FeatureLayout
from models.served.reasons import Reason, contributions, reason_codes

META_FILE = "window_model.json"
BOOSTER_FILES = ("booster_lower.txt", "booster_middle.txt", "booster_upper.txt")
HOUR = pd.Timedelta(hours=1)
# What `predict_hours` returns (the pyfunc's output columns).
HOUR_COLUMNS = ("most_likely_hours", "earliest_hours", "latest_hours")
# The offset of groups without their own: all calibration rows'.
ALL_ROWS = "(all)"


def _zones(timezone: str | Sequence[str] | pd.Series | None, n: int) -> pd.Series:
    if timezone is None or isinstance(timezone, str):
        return pd.Series([timezone or UTC] * n, dtype=object)
    zones = pd.Series(np.asarray(timezone, dtype=object)).reset_index(drop=True)
    return zones.where(zones.notna(), UTC)


def local_dates(instants, timezone: str | Sequence[str] | pd.Series | None) -> np.ndarray:
    """Calendar date (datetime64[D]) of each UTC instant in its row's time zone (NaT stays)."""
    utc = utc_series(instants)
    zones = _zones(timezone, len(utc))
    out = np.full(len(utc), np.datetime64("NaT"), dtype="datetime64[D]")
    for zone, index in zones.groupby(zones, sort=False).groups.items():
        rows = np.asarray(index)
        local = utc.iloc[rows].dt.tz_convert(zone).dt.tz_localize(None)
        out[rows] = local.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    return out


def day_starts(dates: np.ndarray, timezone: str | Sequence[str] | pd.Series | None) -> pd.Series:
    """The first instant (UTC) of each local calendar date.

    Where clocks skip local midnight the first instant is the one after the gap; where
    midnight repeats, the earlier one.
    """
    dates = np.asarray(dates, dtype="datetime64[D]")
    zones = _zones(timezone, len(dates))
    out = pd.Series(pd.NaT, index=range(len(dates)), dtype="datetime64[ns, UTC]")
    for zone, index in zones.groupby(zones, sort=False).groups.items():
        rows = np.asarray(index)
        naive = pd.DatetimeIndex(dates[rows].astype("datetime64[ns]"))
        local = naive.tz_localize(
            zone, ambiguous=np.ones(len(rows), dtype=bool), nonexistent="shift_forward"
        )
        out.iloc[rows] = local.tz_convert(UTC)
    return out


# Hours in a nanosecond count, and the decimals of an hour pandas keeps of the fraction.
_HOUR_NS = 3_600_000_000_000
_HOUR_DIGITS = 12


def hours_as_nanoseconds(hours: np.ndarray) -> np.ndarray:
    """`pd.to_timedelta(hours, unit="h")` in nanoseconds, the same to the nanosecond: whole
    hours times an hour, plus the fraction rounded to 12 decimals, times an hour and truncated,
    as pandas converts floats. On a request's three values this takes a few microseconds,
    pandas about 50; values that are not finite or not below a million hours are handed to
    pandas (NaT as its `NaT` integer)."""
    hours = np.asarray(hours, dtype=np.float64)
    if not np.all(np.isfinite(hours) & (np.abs(hours) < 1e6)):
        return pd.to_timedelta(hours, unit="h").asi8
    whole = hours.astype(np.int64)
    fraction = np.round(hours - whole, _HOUR_DIGITS)
    return whole * _HOUR_NS + (fraction * _HOUR_NS).astype(np.int64)


def _above(anchor: np.ndarray, above: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower, middle and upper log hours: the anchor plus each booster's column of `above`."""
    return anchor + above[:, 0], anchor + above[:, 1], anchor + above[:, 2]


@lru_cache(maxsize=4096)
def day_start(day: date, timezone: str) -> pd.Timestamp:
    """`day_starts` of one local date: its first instant (UTC) in `timezone`. Kept for the
    latest few thousand (date, zone) pairs: a request's window asks for a few dates near
    today, the same from one request to the next, and pandas' localisation costs about
    0.04 ms."""
    local = pd.Timestamp(day).tz_localize(timezone, ambiguous=True, nonexistent="shift_forward")
    return local.tz_convert(UTC)


@lru_cache(maxsize=1024)
def _zone(timezone: str):
    """The time zone object pandas uses for `timezone` (its name)."""
    return pd.Timestamp(0, tz=timezone).tzinfo


def local_date(instant: pd.Timestamp, timezone: str) -> date:
    """The calendar date in `timezone` of a UTC instant: `instant.tz_convert(timezone).date()`,
    through the zone object pandas uses, without a Timestamp in the zone (a local midnight
    falls on a whole second, so the instant's seconds decide the date)."""
    return datetime.fromtimestamp(instant.value // 1_000_000_000, _zone(timezone)).date()


def group_keys(data: pd.DataFrame, columns: Sequence[str]) -> pd.Series | None:
    """Each row's conformal group: the values of `columns` joined by "|" (None when no
    columns are named or one is absent)."""
    if not columns or any(c not in data for c in columns):
        return None
    parts = [data[c].astype("string").fillna("(missing)") for c in columns]
    keys = parts[0]
    for part in parts[1:]:
        keys = keys + "|" + part
    return keys.reset_index(drop=True)


@dataclass(frozen=True)
class ConformalOffsets:
    """Per-group offsets for windows of a stated coverage.

    Attributes:
        coverage: Stated coverage.
        offsets: Group → offset; `ALL_ROWS` holds the offset of all calibration rows, used for
            groups not listed.
        rows: Group → calibration rows behind its offset.
        method: How the offsets were fitted: "split" (once, on a calibration window) or
            "adaptive" (updated as outcomes arrived; these are the latest).
        alphas: Group → the adaptive method's latest miss rate (empty for "split").
    """

    coverage: float
    offsets: dict[str, float]
    rows: dict[str, int] = field(default_factory=dict)
    method: str = "split"
    alphas: dict[str, float] = field(default_factory=dict)

    def for_groups(self, groups: pd.Series | np.ndarray | None, n: int) -> np.ndarray:
        """The offset of each of n rows (all rows' offset where no group is given)."""
        fallback = self.offsets[ALL_ROWS]
        if groups is None:
            return np.full(n, fallback)
        keys = pd.Series(np.asarray(groups, dtype=object)).astype("string").fillna("")
        return keys.map(lambda k: self.offsets.get(k, fallback)).to_numpy(dtype=np.float64)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form (an infinite offset as the string "inf")."""
        return {
            "coverage": self.coverage,
            "offsets": {k: (v if math.isfinite(v) else "inf") for k, v in self.offsets.items()},
            "rows": dict(self.rows),
            "method": self.method,
            "alphas": dict(self.alphas),
        }

    @staticmethod
    def from_dict(data: Mapping) -> ConformalOffsets:
        """Inverse of `to_dict`."""
        return ConformalOffsets(
            float(data["coverage"]),
            {k: float(v) for k, v in data["offsets"].items()},
            {k: int(v) for k, v in data.get("rows", {}).items()},
            str(data.get("method", "split")),
            {k: float(v) for k, v in data.get("alphas", {}).items()},
        )


# Under the serving folder: the delivery window's offsets as updated after training, one
# file per model version (`<version>.json`), with ACI's state beside it.
OFFSETS_FOLDER = "window_offsets"


@dataclass(frozen=True)
class PublishedOffsets:
    """Offsets a nightly update published for one model version.

    Attributes:
        version: The registry version they belong to.
        offsets: The offsets to serve.
        updated_ts: Outcomes known up to this instant were learnt from.
    """

    version: str
    offsets: ConformalOffsets
    updated_ts: pd.Timestamp

    @property
    def calibration(self) -> str:
        """How the window is calibrated, in words: "adaptive, updated 2025-12-30"."""
        return f"{self.offsets.method}, updated {self.updated_ts:%Y-%m-%d}"

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {
            "version": self.version,
            "updated_ts": self.updated_ts.isoformat(),
            "offsets": self.offsets.to_dict(),
        }


def published_offsets_path(folder: Path, version: str) -> Path:
    """The file holding a version's published offsets under `folder` (`OFFSETS_FOLDER`)."""
    return Path(folder) / f"{version}.json"


def read_published_offsets(folder: Path, version: str) -> PublishedOffsets | None:
    """The offsets published for `version` (None when there are none, or the file names
    another version)."""
    path = published_offsets_path(folder, version)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if str(data.get("version")) != str(version):
        return None
    return PublishedOffsets(
        str(data["version"]),
        ConformalOffsets.from_dict(data["offsets"]),
        pd.Timestamp(data["updated_ts"]),
    )


def conformalize(
    lo: np.ndarray, mid: np.ndarray, hi: np.ndarray, offset: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ordered, calibrated windows: lo − c ≤ mid ≤ hi + c for every row.

    Quantile models fitted apart may cross; the three values are sorted per row first. A
    negative offset may not pull a bound past the middle, which only widens the window (so
    never lowers coverage).
    """
    stacked = np.sort(np.column_stack([lo, mid, hi]).astype(np.float64), axis=1)
    lo, mid, hi = stacked[:, 0], stacked[:, 1], stacked[:, 2]
    offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), lo.shape)
    return np.minimum(lo - offset, mid), mid, np.maximum(hi + offset, mid)


def _missing_group(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def record_group_keys(
    records: Sequence[Mapping[str, object]], columns: Sequence[str]
) -> list[str] | None:
    """`group_keys` of rows given as dicts (a column is absent when no row holds it)."""
    if not columns or any(all(c not in r for r in records) for c in columns):
        return None
    return [
        "|".join("(missing)" if _missing_group(v) else str(v) for v in (r.get(c) for c in columns))
        for r in records
    ]


def _number(value: object) -> float:
    """A value as `pd.to_numeric(..., errors="coerce")` reads it: NaN where it is no number."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def anchor_log_hours(data: pd.DataFrame, columns: Sequence[str], default: float) -> np.ndarray:
    """Each row's anchor in log hours: its first finite value of `columns`, else `default`
    (all `default` without columns)."""
    anchor = np.full(len(data), np.nan)
    for column in columns:
        values = pd.to_numeric(data[column], errors="coerce").to_numpy(np.float64)
        anchor = np.where(np.isfinite(anchor), anchor, values)
    return np.where(np.isfinite(anchor), anchor, default)


class WindowRow(NamedTuple):
    """One row of `WindowModel.predict_window`, for a request's few rows
    (`WindowModel.window_rows`): UTC instants, local dates, coverage and calibration."""

    most_likely_ts: pd.Timestamp
    earliest_ts: pd.Timestamp
    latest_ts: pd.Timestamp
    most_likely_date: date
    earliest_date: date
    latest_date: date
    coverage: float
    calibration: str


@dataclass
class WindowModel:
    """Most likely instant and a calibrated window for an event after the decision instant.

    Attributes:
        name: Registry name.
        boosters: Quantile boosters (lower, middle, upper) on log hours to the event.
        best_iterations: Trees each booster uses.
        levels: Their quantile levels.
        layout: Input columns and fixed categories.
        offsets: Conformal offsets (log hours) per group.
        group: Columns whose values, joined by "|", name each row's group (empty: one
            offset; rows lacking a column use the all-rows offset).
        words: Feature → description, for reason codes.
        anchor: Input columns in log hours that the boosters' outputs are added to, the
            first finite one of each row (`anchor_log_hours`; empty: the boosters give log
            hours themselves).
        anchor_default: The anchor of a row where none of `anchor` is finite.
    """

    name: str
    boosters: tuple[lgb.Booster, lgb.Booster, lgb.Booster]
    best_iterations: tuple[int, int, int]
    levels: tuple[float, float, float]
    layout: FeatureLayout
    offsets: ConformalOffsets
    group: tuple[str, ...] = ()
    words: dict[str, str] = field(default_factory=dict)
    anchor: tuple[str, ...] = ()
    anchor_default: float = 0.0

    def __post_init__(self) -> None:
        absent = [c for c in self.anchor if c not in self.layout.features]
        if absent:
            raise ValueError(f"anchor columns {absent} are not among the model's features")

    @property
    def features(self) -> list[str]:
        """Input columns the model reads."""
        return list(self.layout.features)

    @property
    def coverage(self) -> float:
        """Stated coverage of the window."""
        return self.offsets.coverage

    def raw_log_hours(self, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Uncalibrated quantiles of log hours to the event (may cross)."""
        x = self.layout.matrix(data)
        return self._quantiles(x, anchor_log_hours(data, self.anchor, self.anchor_default))

    def _quantiles(
        self, x: np.ndarray, anchor: np.ndarray, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The boosters' log hours for input matrix `x` above each row's `anchor`;
        `num_threads`, each booster call's OpenMP threads (None: LightGBM's default)."""
        return _above(anchor, self.above_anchor(x, num_threads))

    def above_anchor(self, x: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        """The three boosters' log hours above the anchor for input matrix `x`, one column
        each (lower, middle, upper); `num_threads` as in `_quantiles`."""
        threads = {} if num_threads is None else {"num_threads": num_threads}
        return np.column_stack(
            [
                b.predict(x, num_iteration=i, **threads)
                for b, i in zip(self.boosters, self.best_iterations, strict=True)
            ]
        )

    @property
    def calibration(self) -> str:
        """How the window's offsets were fitted: "split" or "adaptive" (`ConformalOffsets`)."""
        return self.offsets.method

    def log_hours(
        self,
        data: pd.DataFrame,
        offset: np.ndarray | None = None,
        quantiles: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated, ordered (earliest, most likely, latest) in log hours from decision.

        Args:
            data: Feature rows.
            offset: Each row's conformal offset, in place of the model's per-group ones (an
                evaluation replaying offsets that adapted over time passes them).
            quantiles: The rows' `raw_log_hours`, where already computed (an evaluation
                that scores the same rows several ways predicts them once).
        """
        lower, middle, upper = self.raw_log_hours(data) if quantiles is None else quantiles
        if offset is None:
            offset = self.offsets.for_groups(group_keys(data, self.group), len(data))
        return conformalize(lower, middle, upper, offset)

    def predict_hours(
        self,
        data: pd.DataFrame,
        offset: np.ndarray | None = None,
        quantiles: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> pd.DataFrame:
        """Hours from each row's decision instant to the most likely, earliest and latest
        event instant (the registered pyfunc's output; no clock or time zone needed);
        `offset` and `quantiles` as in `log_hours`."""
        lower, middle, upper = self.log_hours(data, offset, quantiles)
        values = np.exp(np.column_stack([middle, lower, upper]))
        return pd.DataFrame(values, columns=list(HOUR_COLUMNS), index=data.index)

    def predict_window(
        self,
        data: pd.DataFrame,
        as_of,
        timezone: str | Sequence[str] | pd.Series | None = None,
    ) -> pd.DataFrame:
        """The window each row's customer sees.

        Args:
            data: Feature rows as the feature store and `add_time_features(data, as_of)`
                give them (the derived hours must be computed at `as_of`).
            as_of: Decision instant of each row (a Series aligned with `data`) or one
                instant for all; timezone-aware or UTC.
            timezone: IANA zone of each row's customer (a column, or one name for all);
                None for UTC.

        Returns:
            Indexed like `data`: `most_likely_ts`, `earliest_ts`, `latest_ts` (UTC instants)
            and `most_likely_date`, `earliest_date`, `latest_date` (calendar dates in the
            customer's zone, `datetime64[D]`), with earliest ≤ most likely ≤ latest for
            both, `coverage` (the stated share of windows that hold the delivery date) and
            `calibration` (how the offsets were fitted: "split" or "adaptive").
        """
        n = len(data)
        if isinstance(as_of, pd.Series | np.ndarray | list):
            start = utc_series(as_of)
        else:
            start = pd.Series([pd.Timestamp(as_of)] * n).pipe(utc_series)
        hours = self.predict_hours(data).reset_index(drop=True)
        zones = timezone.reset_index(drop=True) if isinstance(timezone, pd.Series) else timezone
        out = {}
        for kind, column in zip(("most_likely", "earliest", "latest"), HOUR_COLUMNS, strict=True):
            instants = start + pd.to_timedelta(hours[column].to_numpy(), unit="h")
            out[f"{kind}_ts"] = instants.to_numpy()
            out[f"{kind}_date"] = local_dates(instants, zones)
        frame = pd.DataFrame(out, index=data.index)
        for kind in ("most_likely", "earliest", "latest"):
            frame[f"{kind}_ts"] = pd.to_datetime(frame[f"{kind}_ts"], utc=True)
        frame["coverage"] = self.coverage
        frame["calibration"] = self.calibration
        return frame

    def window_rows(
        self,
        records: Sequence[Mapping[str, object]],
        as_of: pd.Timestamp,
        timezones: Sequence[str],
        num_threads: int | None = None,
        memo: DecisionMemo | None = None,
        boosters: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> list[WindowRow]:
        """`predict_window` of a request's rows, given as dicts, at one decision instant, each
        in its zone: the same instants and dates without a frame (a frame's window cost a
        request about 30,000 interpreter calls). With `memo` (keyed on this model's
        boosters: `decision_key`), the boosters' outputs of rows answered before come from
        it. `boosters`, where given, computes `above_anchor` of input rows in its stead (the
        service's single-row path: the same values, sooner)."""
        x = self.layout.records_matrix(records)
        anchor = np.full(len(records), self.anchor_default)
        for k, record in enumerate(records):
            for column in self.anchor:
                value = _number(record.get(column))
                if math.isfinite(value):
                    anchor[k] = value
                    break

        if boosters is None:

            def boosters(rows: np.ndarray) -> np.ndarray:
                return self.above_anchor(rows, num_threads)

        above = boosters(x) if memo is None else memo.rows(x, boosters)
        lower, middle, upper = _above(anchor, above)
        keys = record_group_keys(records, self.group)
        fallback = self.offsets.offsets[ALL_ROWS]
        offset = (
            np.full(len(records), fallback)
            if keys is None
            else np.array([self.offsets.offsets.get(k, fallback) for k in keys])
        )
        lower, middle, upper = conformalize(lower, middle, upper, offset)
        start = utc_instant(as_of).value
        hours = np.exp(np.column_stack([middle, lower, upper]))
        spans = hours_as_nanoseconds(hours.ravel())
        rows = []
        for k, zone in enumerate(timezones):
            instants = [pd.Timestamp(start + int(t), tz=UTC) for t in spans[3 * k : 3 * k + 3]]
            days = [local_date(t, zone or UTC) for t in instants]
            rows.append(WindowRow(*instants, *days, self.coverage, self.calibration))
        return rows

    def decision_key(self) -> DecisionKey:
        """The key of a row's decisions at every split of the three boosters."""
        return DecisionKey.of_boosters(zip(self.boosters, self.best_iterations, strict=True))

    def contributions(self, data: pd.DataFrame) -> pd.DataFrame:
        """SHAP contributions to the most likely log hours, per row and feature, plus `bias`
        (which holds the row's anchor: the features move the estimate away from it)."""
        values = contributions(self.boosters[1], self.layout, data, self.best_iterations[1])
        values["bias"] += anchor_log_hours(data, self.anchor, self.anchor_default)
        return values

    def reasons(self, data: pd.DataFrame, k: int = 3, direction: str = "up") -> list[list[Reason]]:
        """Top-k reasons per row, in words ("up": what pushes the delivery later)."""
        return reason_codes(self.contributions(data), data, self.words, k=k, direction=direction)

    def input_frame(self, data: pd.DataFrame) -> pd.DataFrame:
        """The feature columns as the signature declares them (floats, strings or None)."""
        return self.layout.input_frame(data)

    def signature_output(self, data: pd.DataFrame) -> pd.DataFrame:
        """What the registered pyfunc returns for `data`."""
        return self.predict_hours(data)

    def save(self, folder: Path) -> Path:
        """Write the model as plain files: three LightGBM text files and one JSON."""
        folder.mkdir(parents=True, exist_ok=True)
        for booster, best, path in zip(
            self.boosters, self.best_iterations, BOOSTER_FILES, strict=True
        ):
            booster.save_model(folder / path, num_iteration=best)
        meta = {
            "name": self.name,
            "best_iterations": list(self.best_iterations),
            "levels": list(self.levels),
            "layout": self.layout.to_dict(),
            "offsets": self.offsets.to_dict(),
            "group": list(self.group),
            "words": self.words,
            "anchor": list(self.anchor),
            "anchor_default": self.anchor_default,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @staticmethod
    def load(folder: Path) -> WindowModel:
        """Read a model written by `save`."""
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        boosters = tuple(lgb.Booster(model_file=str(folder / p)) for p in BOOSTER_FILES)
        return WindowModel(
            name=meta["name"],
            boosters=boosters,
            best_iterations=tuple(int(i) for i in meta["best_iterations"]),
            levels=tuple(float(v) for v in meta["levels"]),
            layout=FeatureLayout.from_dict(meta["layout"]),
            offsets=ConformalOffsets.from_dict(meta["offsets"]),
            group=tuple(meta.get("group") or ()),
            words=meta.get("words", {}),
            anchor=tuple(meta.get("anchor") or ()),
            anchor_default=float(meta.get("anchor_default", 0.0)),
        )


# The file MLflow runs to build `WindowPyfunc` when it loads a logged window model.
PYFUNC_CODE = Path(__file__).with_name("pyfunc_window.py")


class WindowPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of a `WindowModel`: rows in, hours to the window out."""

    def load_context(self, context) -> None:
        """Load the boosters and offsets from the logged artifacts."""
        self.model = WindowModel.load(Path(context.artifacts["model_dir"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Hours from decision to the most likely, earliest and latest instant."""
        return self.model.predict_hours(model_input)
