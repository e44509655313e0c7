"""Frame helpers shared by the model declarations and the trainers."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def sorted_stably(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`frame.sort_values(columns, kind="stable")`, the same rows in the same order, ordered
    by Arrow where every column converts to an Arrow array of its own type.

    pandas sorts a column of Python strings by factorising it in Python; Arrow's stable sort
    does it in C++ (a million customers' 3,002,742 delay-risk label events: 2.4 s against
    7.0 s). Arrow compares strings by their UTF-8 bytes, which orders them by code point
    as Python does; missing values (None, NaN, NaT) go last in both. Categorical columns
    (ordered by their categories in pandas) and columns Arrow cannot convert (mixed
    objects) are sorted by pandas.
    """
    names = list(columns)
    if any(isinstance(frame[c].dtype, pd.CategoricalDtype) for c in names):
        return frame.sort_values(names, kind="stable")
    try:
        table = pa.table({str(i): pa.Array.from_pandas(frame[c]) for i, c in enumerate(names)})
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return frame.sort_values(names, kind="stable")
    keys = [(str(i), "ascending", "at_end") for i in range(len(names))]
    order = pc.sort_indices(table, sort_keys=keys)
    return frame.iloc[order.to_numpy()]
