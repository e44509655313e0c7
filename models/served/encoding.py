"""A model's inputs: their order, the categories of categorical ones, and one encoder.

Categorical features are fixed from the training window: the same string always maps to
the same code at validation, test and serving time, and a value never seen in training
becomes missing instead of silently taking another category's code. A missing categorical
value is its own category, `MISSING_CATEGORY`, because for a contact reason or a last scan
type "none yet" is information, not noise.

`FeatureLayout.matrix` (frames) and `FeatureLayout.row_values` (dicts) are the one encoding:
training fits LightGBM on `matrix`, and serving, batch scoring and explanations feed it the
same numbers (categories as codes, NaN where unseen), so a model scores identically
wherever it runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

MISSING_CATEGORY = "(missing)"


@dataclass(frozen=True)
class FeatureLayout:
    """The model's input columns, their order, and the categories of categorical ones."""

    features: tuple[str, ...]
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def categorical(self) -> tuple[str, ...]:
        """Categorical feature names, in feature order."""
        return tuple(f for f in self.features if f in self.categories)

    @property
    def categorical_indices(self) -> list[int]:
        """Positions of the categorical features in the matrix (LightGBM's
        `categorical_feature`)."""
        return [j for j, f in enumerate(self.features) if f in self.categories]

    @cached_property
    def codes(self) -> dict[str, dict[str, int]]:
        """Categorical feature → category → its code."""
        return {
            name: {value: i for i, value in enumerate(values)}
            for name, values in self.categories.items()
        }

    @cached_property
    def _indexes(self) -> dict[str, pd.Index]:
        return {name: pd.Index(values) for name, values in self.categories.items()}

    def encode(self, name: str, value: object) -> float:
        """One input value as the model reads it: a category's code (NaN when unseen), a
        number as float (NaN when missing)."""
        return _encoded(value, *self._encoders.get(name, (None, math.nan)))

    def matrix(self, data: pd.DataFrame, dtype: type[np.floating] = np.float64) -> np.ndarray:
        """The model input matrix of a frame (one column per feature in order).

        Column-major: each feature is written contiguously (a row-major fill of a million
        rows took 1.4 s of strided writes, this 0.2 s), and LightGBM reads either layout
        without copying it. Each column is encoded and cast into the one preallocated
        array, so no other copy of the whole matrix is made.

        Args:
            data: Rows holding the feature columns.
            dtype: `np.float64` (scoring) or `np.float32`, half the memory: training hands
                LightGBM float32, whose bins are the same up to float32 rounding.

        Raises:
            KeyError: A feature column is absent from `data`.
        """
        absent = [f for f in self.features if f not in data.columns]
        if absent:
            raise KeyError(f"input lacks feature columns {absent}")
        out = np.empty((len(data), len(self.features)), dtype=dtype, order="F")
        for j, name in enumerate(self.features):
            out[:, j] = self.column(name, data[name])
        return out

    def column(self, name: str, values: pd.Series) -> np.ndarray:
        """One feature's values encoded as `matrix` encodes them."""
        index = self._indexes.get(name)
        if index is None:
            if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                return values.to_numpy(dtype=np.float64, na_value=np.nan)
            return pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
        # Factorise first: a few distinct strings to look up instead of a million.
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        found = index.get_indexer(pd.Index(uniques, dtype=object).astype(str))
        lookup = np.where(found >= 0, found, np.nan)
        missing = index.get_indexer([MISSING_CATEGORY])[0]
        missing_code = float(missing) if missing >= 0 else np.nan
        if not len(uniques):  # every value missing
            return np.full(len(values), missing_code)
        return np.where(codes >= 0, lookup[np.maximum(codes, 0)], missing_code)

    @cached_property
    def _encoders(self) -> dict[str, tuple[dict[str, float], float]]:
        """Categorical feature → its categories' codes as floats and its missing value's
        code, worked out once for `encode` and `row_values` (a request's rows are encoded
        value by value in Python)."""
        encoders = {}
        for name, codes in self.codes.items():
            floats = {value: float(code) for value, code in codes.items()}
            encoders[name] = (floats, floats.get(MISSING_CATEGORY, math.nan))
        return encoders

    @cached_property
    def _row_plan(self) -> tuple[tuple[str, dict[str, float] | None, float], ...]:
        """Per feature in order: its name, its categories' codes (None for a number) and its
        missing value's code."""
        return tuple((name, *self._encoders.get(name, (None, math.nan))) for name in self.features)

    @cached_property
    def _numbers_plan(self) -> tuple[tuple[str, ...], np.ndarray]:
        """The numeric features' names and positions, in feature order."""
        names = [name for name in self.features if name not in self.categories]
        positions = [j for j, name in enumerate(self.features) if name not in self.categories]
        return tuple(names), np.array(positions, dtype=np.intp)

    @cached_property
    def _categories_plan(self) -> tuple[tuple[int, str, dict[str, float], float], ...]:
        """Per categorical feature in order: its position, name, categories' codes and
        missing value's code."""
        return tuple(
            (j, name, *self._encoders[name])
            for j, name in enumerate(self.features)
            if name in self.categories
        )

    def row_values(self, record: Mapping[str, object]) -> np.ndarray:
        """One row given as a dict, encoded as `matrix` encodes a frame's row (`encode`
        of each feature).

        The numbers go to NumPy as one list, which reads None as NaN and converts the rest
        as `float` does (value by value, a row of a hundred features cost a tenth of a
        millisecond); a row holding anything NumPy refuses (pandas' NA) is encoded value by
        value."""
        get = record.get
        names, positions = self._numbers_plan
        out = np.empty(len(self.features), dtype=np.float64)
        try:
            out[positions] = np.array([get(name) for name in names], dtype=np.float64)
        except (TypeError, ValueError):
            return np.array(
                [_encoded(get(name), codes, miss) for name, codes, miss in self._row_plan]
            )
        for j, name, codes, missing_code in self._categories_plan:
            value = get(name)
            out[j] = missing_code if _missing(value) else codes.get(str(value), math.nan)
        return out

    def records_matrix(self, records: Sequence[Mapping[str, object]]) -> np.ndarray:
        """A few rows given as dicts (the per-request path)."""
        out = np.empty((len(records), len(self.features)), dtype=np.float64)
        for i, record in enumerate(records):
            out[i] = self.row_values(record)
        return out

    def input_frame(self, data: pd.DataFrame) -> pd.DataFrame:
        """The feature columns as a registered model's signature declares them: float64
        numbers and strings (None where missing) for categories."""
        out = {}
        for name in self.features:
            if name in self.categories:
                values = data[name].astype("string").astype(object)
                out[name] = values.where(data[name].notna(), None)
            else:
                out[name] = pd.to_numeric(data[name], errors="coerce").astype(np.float64)
        return pd.DataFrame(out, index=data.index)

    def category_labels(self, name: str, codes: np.ndarray) -> np.ndarray:
        """The categories of encoded values of one categorical feature (None where NaN)."""
        values = np.asarray(self.categories[name], dtype=object)
        codes = np.asarray(codes, dtype=np.float64)
        known = ~np.isnan(codes)
        out = np.full(len(codes), None, dtype=object)
        out[known] = values[codes[known].astype(np.int64)]
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {
            "features": list(self.features),
            "categories": {k: list(v) for k, v in self.categories.items()},
        }

    @staticmethod
    def from_dict(data: Mapping) -> FeatureLayout:
        """Inverse of `to_dict`."""
        return FeatureLayout(
            tuple(data["features"]), {k: tuple(v) for k, v in data["categories"].items()}
        )


def _encoded(value: object, codes: dict[str, float] | None, missing_code: float) -> float:
    """One value as the model reads it: with `codes` (a categorical feature), its
    category's code (NaN when unseen; `missing_code` when missing); else a float (NaN when
    missing)."""
    if codes is None:
        return math.nan if _missing(value) else float(value)
    return missing_code if _missing(value) else codes.get(str(value), math.nan)


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
