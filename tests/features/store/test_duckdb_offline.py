"""The as-of point-in-time join gives the answer of Feast's own ibis join, row for row, and
file sources resolve against the repo path."""

from __future__ import annotations

from datetime import timedelta

import ibis
import numpy as np
import pandas as pd
import pytest
from feast import FileSource
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.ibis import deduplicate, point_in_time_join

from features.store.duckdb_offline import ViewTable, as_of_join, local_parquet_path, newest_rows

START = pd.Timestamp("2024-01-01", tz="UTC")


def random_case(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Label events and feature rows with ties on event_ts, restated rows and gaps."""
    rng = np.random.default_rng(seed)
    rows = 400
    features = pd.DataFrame(
        {
            "customer_id": rng.choice(["a", "b", "c", "d"], rows),
            # Coarse instants so that many rows share (entity, event_ts).
            "event_ts": START + pd.to_timedelta(rng.integers(0, 60, rows), unit="D"),
            "x": rng.normal(size=rows),
            "label": rng.choice(["p", "q", None], rows),
        }
    )
    # Distinct created_ts within an (entity, event_ts) so that the answer is unique.
    features["created_ts"] = features["event_ts"] + pd.to_timedelta(rng.permutation(rows), unit="s")
    events = pd.DataFrame(
        {
            "customer_id": rng.choice(["a", "b", "c", "d", "nobody"], 300),
            "event_timestamp": START
            + pd.to_timedelta(rng.integers(-5 * 24, 70 * 24, 300), unit="h"),
        }
    )
    # Some events exactly at a feature row's instant, and repeated events.
    at = features.sample(20, random_state=seed)[["customer_id", "event_ts"]]
    events = pd.concat(
        [events, at.rename(columns={"event_ts": "event_timestamp"}), events.head(5)],
        ignore_index=True,
    )
    events["row"] = np.arange(len(events))
    return events, features


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ttl", [None, timedelta(days=9), timedelta(hours=20)])
def test_as_of_join_equals_feasts_join(seed: int, ttl: timedelta | None) -> None:
    events, features = random_case(seed)
    entity_table, feature_table = ibis.memtable(events), ibis.memtable(features)
    expected = point_in_time_join(
        entity_table,
        [
            (
                feature_table,
                "event_ts",
                "created_ts",
                {"customer_id": "customer_id"},
                ["x", "label"],
                ttl,
            )
        ],
        event_timestamp_col="event_timestamp",
    ).execute()
    view = ViewTable(feature_table, "event_ts", "created_ts", {"customer_id": "customer_id"}, ttl)
    got = as_of_join(entity_table, view, "event_timestamp", "__t0", ["x", "label"]).execute()
    assert len(got) == len(events)
    assert got["row"].is_unique
    got = got.sort_values("row").reset_index(drop=True)
    expected = expected.sort_values("row").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[expected.columns], expected)
    assert got["x"].notna().any()
    assert got["x"].isna().any()


def test_as_of_join_without_created_column_and_two_keys() -> None:
    features = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b"],
            "category": ["toys", "toys", "books", "toys"],
            "event_ts": [START, START + timedelta(days=2), START, START],
            "bought": [1, 2, 10, 100],
        }
    )
    events = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "b"],
            "category": ["toys", "toys", "books", "books", "toys"],
            "event_timestamp": [
                START + timedelta(days=1),
                START + timedelta(days=2),
                START - timedelta(microseconds=1),
                START,
                START,
            ],
        }
    )
    view = ViewTable(
        ibis.memtable(features),
        "event_ts",
        None,
        {"customer_id": "customer_id", "category": "category"},
        None,
    )
    got = as_of_join(ibis.memtable(events), view, "event_timestamp", "__t0", ["bought"])
    got = got.execute().set_index(["customer_id", "category", "event_timestamp"])
    expected = events.assign(bought=[1, 2, None, None, 100])
    expected = expected.set_index(["customer_id", "category", "event_timestamp"])
    assert got.loc[expected.index, "bought"].tolist() == pytest.approx(
        expected["bought"].tolist(), nan_ok=True
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("created", ["created_ts", None])
@pytest.mark.parametrize("keys", [["customer_id"], ["customer_id", "label"]])
def test_newest_rows_equal_feasts_deduplication(seed: int, created, keys) -> None:
    _, features = random_case(seed)
    # Entity keys are never null (Feast cannot key an online row on a null).
    features["label"] = features["label"].fillna("none")
    if created is None:
        # Without a created column, (keys, event_ts) must name one row for one answer.
        features = features.drop_duplicates([*keys, "event_ts"])
    table = ibis.memtable(features.drop(columns=[] if created else ["created_ts"]))
    expected = deduplicate(table, keys, "event_ts", created).execute()
    got = newest_rows(table, keys, "event_ts", created).execute()
    order = [*keys, "x"]
    expected = expected.sort_values(order).reset_index(drop=True)
    got = got[expected.columns].sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert len(got) == features.drop_duplicates(keys).shape[0]


def test_newest_rows_prefer_a_known_created_time_and_keep_unknown_ones() -> None:
    features = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "b"],
            "event_ts": [START, START, START, START - timedelta(days=1)],
            "created_ts": [None, START + timedelta(hours=1), None, START],
            "x": [1.0, 2.0, 3.0, 4.0],
        }
    )
    features["created_ts"] = pd.to_datetime(features["created_ts"], utc=True)
    got = newest_rows(ibis.memtable(features), ["customer_id"], "event_ts", "created_ts")
    got = got.execute().set_index("customer_id")["x"]
    # a: the row with a created time; b: its only row at the newest event time.
    assert got.to_dict() == {"a": 2.0, "b": 3.0}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("orders", "{repo}/orders/*.parquet"),
        ("orders/part-00000.parquet", "{repo}/orders/part-00000.parquet"),
        ("/elsewhere/orders.parquet", "/elsewhere/orders.parquet"),
        ("s3://bucket/orders.parquet", None),
    ],
)
def test_local_parquet_path_resolves_against_the_repo(tmp_path, path, expected) -> None:
    (tmp_path / "orders").mkdir()
    source = FileSource(name="s", path=path, timestamp_field="event_ts")
    want = expected.format(repo=tmp_path) if expected else None
    assert local_parquet_path(source, tmp_path) == want
    parquet = FileSource(
        name="s", path=path, timestamp_field="event_ts", file_format=ParquetFormat()
    )
    assert local_parquet_path(parquet, tmp_path) == want
