"""Scoring by id: champions from the MLflow registry, features from the Feast online store.

`ServedModel` wraps a registry champion's `CalibratedModel` for fast use: the input matrix is
built straight from feature values (categories to the training codes through a dict, as
`FeatureLayout.frame` and LightGBM's pandas path would), so one id costs a dict walk and a
booster call instead of a pandas round trip. Decision-time features come from
`features.build.derived`: `add_time_features`, the function training used, for frames and
its one-row form `derive_record` per request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.contract.schema import CONTACT_REASONS
from training.calibrate import _EPS
from training.explain import Reason, _format, reason_codes
from training.fit import MISSING_CATEGORY
from training.model import CalibratedModel

if TYPE_CHECKING:
    from training.window import WindowModel

# One OpenMP thread per call: a request scores a handful of rows, and on a shared 2-core
# machine more threads busy-wait against each other (see training.fit.DEFAULT_PARAMS).
PREDICT_THREADS = 1
# Calibrated probability → band, for people reading a score.
BANDS = ((0.5, "high"), (0.2, "medium"), (0.0, "low"))


class StoreUnavailableError(RuntimeError):
    """The online feature store could not be read."""


class ModelUnavailableError(RuntimeError):
    """No champion of a model is registered."""


def band(probability: float) -> str:
    """The band a calibrated probability falls in."""
    return next(name for floor, name in BANDS if probability >= floor)


def fast_calibration(calibrator) -> Callable[[np.ndarray], np.ndarray]:
    """The calibrator as plain numpy: scikit-learn's input checks cost a few hundred
    microseconds per call, more than the model itself for one row (a test holds the two
    equal). Isotonic: linear interpolation between the fitted thresholds, clipped at both
    ends; Platt: a logistic on the logit of the raw probability."""
    if calibrator.method == "isotonic" and calibrator.isotonic is not None:
        xs = np.asarray(calibrator.isotonic.X_thresholds_, dtype=np.float64)
        ys = np.asarray(calibrator.isotonic.y_thresholds_, dtype=np.float64)
        return lambda raw: np.clip(np.interp(np.asarray(raw, dtype=np.float64), xs, ys), 0, 1)
    if calibrator.method == "platt" and calibrator.platt is not None:
        slope = float(calibrator.platt.coef_.ravel()[0])
        intercept = float(calibrator.platt.intercept_.ravel()[0])

        def platt(raw: np.ndarray) -> np.ndarray:
            p = np.clip(np.asarray(raw, dtype=np.float64), _EPS, 1 - _EPS)
            return 1.0 / (1.0 + np.exp(-(slope * np.log(p / (1 - p)) + intercept)))

        return platt
    return lambda raw: np.asarray(calibrator(raw), dtype=np.float64)


@dataclass
class ServedModel:
    """A registry champion, ready to score rows of feature values.

    Attributes:
        name: Registered model name.
        version: Registry version.
        aliases: The version's aliases.
        model: The calibrated model.
    """

    name: str
    version: str
    aliases: list[str]
    model: CalibratedModel
    _codes: dict[str, dict[str, int]] = field(init=False, repr=False)
    _category_index: dict[str, pd.Index] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._codes = {
            name: {value: i for i, value in enumerate(values)}
            for name, values in self.model.layout.categories.items()
        }
        self._category_index = {
            name: pd.Index(values) for name, values in self.model.layout.categories.items()
        }
        self._calibrate = fast_calibration(self.model.calibrator)

    def ref(self):
        """The version as answers name it."""
        from serving.schemas import ModelRef

        return ModelRef(name=self.name, version=self.version)

    @property
    def features(self) -> tuple[str, ...]:
        """Input columns, in model order."""
        return self.model.layout.features

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Model input matrix of a frame (categories as training codes, NaN when unseen).

        Column-major: each feature is written contiguously (a row-major fill of a million
        rows took 1.4 s of strided writes, this 0.2 s), and LightGBM predicts from either
        layout at the same speed.
        """
        out = np.empty((len(frame), len(self.features)), dtype=np.float64, order="F")
        for j, name in enumerate(self.features):
            column = frame[name]
            index = self._category_index.get(name)
            if index is None:
                if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
                    out[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
                else:
                    out[:, j] = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
                continue
            # Factorise first: a few distinct strings to look up instead of a million.
            codes, uniques = pd.factorize(column, use_na_sentinel=True)
            found = index.get_indexer(pd.Index(uniques, dtype=object).astype(str))
            lookup = np.where(found >= 0, found, np.nan)
            missing = index.get_indexer([MISSING_CATEGORY])[0]
            missing_code = float(missing) if missing >= 0 else np.nan
            out[:, j] = np.where(codes >= 0, lookup[np.maximum(codes, 0)], missing_code)
        return out

    def matrix_from_records(self, records: Sequence[dict]) -> np.ndarray:
        """Model input matrix of a few rows given as dicts (the per-request path)."""
        out = np.empty((len(records), len(self.features)), dtype=np.float64)
        for i, record in enumerate(records):
            for j, name in enumerate(self.features):
                value = record.get(name)
                codes = self._codes.get(name)
                if codes is not None:
                    key = MISSING_CATEGORY if value is None else str(value)
                    out[i, j] = codes.get(key, math.nan)
                else:
                    out[i, j] = math.nan if value is None else float(value)
        return out

    def probability(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of matrix rows."""
        raw = self.model.booster.predict(
            x, num_iteration=self.model.best_iteration, num_threads=PREDICT_THREADS
        )
        return self._calibrate(raw)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP contributions (log-odds) of matrix rows, one column per feature, then bias."""
        return self.model.booster.predict(
            x,
            num_iteration=self.model.best_iteration,
            pred_contrib=True,
            num_threads=PREDICT_THREADS,
        )

    def probability_from_contributions(self, contrib: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from SHAP contributions, which add up to the raw
        log-odds: one booster call gives the score and its reasons."""
        return self._calibrate(1.0 / (1.0 + np.exp(-contrib.sum(axis=1))))

    def reasons(self, contrib: np.ndarray, records: Sequence[dict], k: int = 3) -> list:
        """The top-k reasons raising each row's score, in words (rows as dicts)."""
        features, words = self.features, self.model.words
        return [
            top_reasons(c, r, features, words, k) for c, r in zip(contrib, records, strict=True)
        ]

    def reasons_frame(self, contrib: np.ndarray, values: pd.DataFrame, k: int = 3) -> list:
        """The same reasons for rows of a frame (`training.explain.reason_codes`)."""
        frame = pd.DataFrame(contrib, columns=[*self.features, "bias"], index=values.index)
        return reason_codes(frame, values.reindex(columns=list(self.features)), self.model.words, k)


@dataclass(frozen=True)
class ServedWindow:
    """A registry champion of a time-to-event model (`training.window.WindowModel`).

    Attributes:
        name: Registered model name.
        version: Registry version.
        aliases: The version's aliases.
        model: The window model.
    """

    name: str
    version: str
    aliases: list[str]
    model: WindowModel

    def ref(self):
        """The version as answers name it."""
        from serving.schemas import ModelRef

        return ModelRef(name=self.name, version=self.version)


def driving_contact_reason(
    contrib: np.ndarray, features: Sequence[str], latest: Sequence[object]
) -> list[str | None]:
    """Per row, the contact reason whose features raise the churn score most (None if none
    does): the contributions of its contact counts plus, where it is the latest contact's
    reason, that feature's.

    Args:
        contrib: SHAP contributions, one row per customer, columns in `features` order.
        features: The churn model's features.
        latest: Each row's `last_contact_reason`.
    """
    index = {name: j for j, name in enumerate(features)}
    sums = np.zeros((len(contrib), len(CONTACT_REASONS)))
    for r, reason in enumerate(CONTACT_REASONS):
        columns = [j for name, j in index.items() if name.startswith(f"contacts_{reason}_")]
        if columns:
            sums[:, r] = contrib[:, columns].sum(axis=1)
    if "last_contact_reason" in index:
        own = contrib[:, index["last_contact_reason"]]
        for i, reason in enumerate(latest):
            if reason in CONTACT_REASONS:
                sums[i, CONTACT_REASONS.index(reason)] += own[i]
    best = sums.argmax(axis=1) if len(contrib) else np.zeros(0, dtype=np.int64)
    return [CONTACT_REASONS[j] if sums[i, j] > 0 else None for i, j in enumerate(best.tolist())]


def top_reasons(
    contrib: np.ndarray, record: dict, features: Sequence[str], words: dict, k: int
) -> list[Reason]:
    """The top-k features raising one row's score, as `training.explain.reason_codes`
    words them with direction "up" (a test holds the two equal)."""
    order = np.argsort(-contrib[: len(features)], kind="stable")[:k]
    out = []
    for j in order:
        c = float(contrib[j])
        if c <= 0:
            break
        name = features[j]
        value = record.get(name)
        shown = _format(math.nan if value is None else value)
        out.append(Reason(name, shown, c, f"{words.get(name, name)}: {shown} (raises the score)"))
    return out


def _python(value) -> object:
    """A Feast ValueProto as a Python scalar (None when null or unset)."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(value, kind)


class OnlineFeatures:
    """Feature rows by id from the Feast online store, through one feature service.

    A service over one feature view is read through the provider's `online_read` (the
    online store's own lookup) and decoded here: `get_online_features` builds a full
    response protobuf and converts it back, several times the cost of the lookup for one
    id. Rows older than the view's TTL are still returned: a decision needs the latest known
    state, and batch scoring reads the same rows from the offline tables. Services over
    several views go through `get_online_features`.
    """

    def __init__(self, store, service_name: str) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self.store = store
        self.service = store.get_feature_service(service_name)
        projections = self.service.feature_view_projections
        self.names = [f.name for p in projections for f in p.features]
        views = [store.get_feature_view(p.name) for p in projections]
        self.key = views[0].entity_columns[0].name
        self.view = views[0] if len(views) == 1 else None
        self._entity_key, self._value = EntityKey, Value

    def fetch(self, ids: Sequence[str]) -> list[dict | None]:
        """One dict of feature values per id, None for an id the store does not know.

        Raises:
            StoreUnavailableError: The store could not be read.
        """
        try:
            if self.view is not None:
                return self._read_view(ids)
            got = self.store.get_online_features(
                features=self.service, entity_rows=[{self.key: i} for i in ids]
            ).to_dict()
        except Exception as error:  # any backend failure: the caller answers 503
            raise StoreUnavailableError(f"online feature store unavailable: {error}") from error
        out: list[dict | None] = []
        for i in range(len(ids)):
            row = {name: got[name][i] for name in self.names}
            out.append(row if any(v is not None for v in row.values()) else None)
        return out

    def _read_view(self, ids: Sequence[str]) -> list[dict | None]:
        keys = [
            self._entity_key(join_keys=[self.key], entity_values=[self._value(string_val=i)])
            for i in ids
        ]
        rows = self.store._get_provider().online_read(
            config=self.store.config,
            table=self.view,
            entity_keys=keys,
            requested_features=self.names,
        )
        return [
            None if values is None else {n: _python(values.get(n)) for n in self.names}
            for _, values in rows
        ]
