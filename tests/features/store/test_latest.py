"""The newest stored row per entity at a decision instant, read from a folder of Parquet
parts, is the row pandas finds by sorting every row: restated rows win, later rows are
never read, and a list of wanted entities limits the answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.store.latest import latest_rows

START = pd.Timestamp("2025-01-01", tz="UTC")


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """Three parts of rows of 50 customers, with restatements: equal event_ts, later
    created_ts, often in another part."""
    rng = np.random.default_rng(5)
    rows = 3000
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in rng.integers(0, 50, rows)],
            "event_ts": START + pd.to_timedelta(rng.integers(0, 40, rows), unit="D"),
            "orders_total": rng.integers(0, 9, rows).astype(float),
        }
    )
    frame["created_ts"] = frame["event_ts"] + pd.to_timedelta(rng.permutation(rows), unit="s")
    folder = tmp_path / "customer_snapshots"
    folder.mkdir()
    for n, part in enumerate(np.array_split(frame.sample(frac=1, random_state=1), 3)):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / f"p{n}.parquet")
    return folder, frame


def _expected(frame: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    seen = frame[frame["event_ts"] <= as_of].sort_values(["event_ts", "created_ts"])
    newest = seen.groupby("customer_id").tail(1).sort_values("customer_id")
    return newest.reset_index(drop=True)


@pytest.mark.parametrize("days", [0, 7, 39, 60])
def test_the_newest_row_per_customer_is_the_one_pandas_finds(folder, days: int) -> None:
    path, frame = folder
    as_of = START + pd.Timedelta(days=days)
    got = latest_rows(path, "customer_id", as_of, with_time=True)
    expected = _expected(frame, as_of)
    assert len(got) == len(expected) > 0
    pd.testing.assert_frame_equal(
        got[["customer_id", "event_ts", "orders_total"]],
        expected[["customer_id", "event_ts", "orders_total"]],
        check_dtype=False,
    )
    assert "created_ts" not in got.columns


def test_only_the_wanted_customers_are_read(folder) -> None:
    path, frame = folder
    as_of = START + pd.Timedelta(days=20)
    wanted = pa.table({"customer_id": ["c3", "c7", "nobody"]})
    got = latest_rows(path, "customer_id", as_of, wanted)
    expected = _expected(frame, as_of)
    expected = expected[expected["customer_id"].isin(["c3", "c7"])].reset_index(drop=True)
    assert got["customer_id"].tolist() == expected["customer_id"].tolist()
    assert got["orders_total"].tolist() == expected["orders_total"].tolist()
    assert "event_ts" not in got.columns
