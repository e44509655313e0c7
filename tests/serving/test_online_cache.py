"""The rows a feature reader keeps: the same records as a fresh read, let go of whenever the
store changes, whoever changed it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

from features.store.sqlite_bulk import STORE_TYPE, BulkSqliteOnlineStore
from serving.online import FeatureReader

T0 = datetime(2024, 3, 1, tzinfo=UTC)
IDS = [f"c{i:02d}" for i in range(8)]


def _store(folder: Path, parquet: Path) -> FeatureStore:
    config = RepoConfig(
        project="cachetest",
        provider="features.store.provider.BulkProvider",
        registry=str(folder / "registry.db"),
        online_store={"type": STORE_TYPE, "path": str(folder / "online.db")},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=str(folder),
    )
    return FeatureStore(config=config)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[FeatureStore, Path]:
    parquet = tmp_path / "stats.parquet"
    rows = [
        {
            "customer_id": cid,
            "event_ts": T0 - timedelta(days=i + 1),
            "spend": 10.0 * i,
            "orders": i,
            "tier": "gold" if i % 2 else None,
        }
        for i, cid in enumerate(IDS)
    ]
    pd.DataFrame(rows).to_parquet(parquet)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="stats",
        entities=[customer],
        ttl=timedelta(days=60),
        source=FileSource(path=str(parquet), timestamp_field="event_ts"),
        schema=[
            Field(name="customer_id", dtype=String),
            Field(name="spend", dtype=Float64),
            Field(name="orders", dtype=Int64),
            Field(name="tier", dtype=String),
        ],
    )
    store = _store(tmp_path, parquet)
    store.apply([customer, view, FeatureService(name="stats_v1", features=[view])])
    store.materialize(T0 - timedelta(days=30), T0)
    return store, tmp_path


def _write(store: FeatureStore, cid: str, spend: float, at: datetime) -> None:
    frame = pd.DataFrame(
        [{"customer_id": cid, "event_ts": at, "spend": spend, "orders": 99, "tier": "new"}]
    )
    store.write_to_online_store("stats", frame)


def _reads(monkeypatch) -> list[int]:
    """Counts of the keys each read of the SQLite store was asked for."""
    asked: list[int] = []
    read_values = BulkSqliteOnlineStore.read_values

    def counted(self, config, table, join_keys, entity_values, features):
        asked.append(len(entity_values))
        return read_values(self, config, table, join_keys, entity_values, features)

    monkeypatch.setattr(BulkSqliteOnlineStore, "read_values", counted)
    return asked


def test_kept_rows_equal_fresh_reads_and_are_not_read_again(repo, monkeypatch) -> None:
    store, _ = repo
    kept = FeatureReader(store, "stats", cache_rows=100)
    fresh = FeatureReader(store, "stats")
    keys = [[cid] for cid in [*IDS, "nobody"]]
    asked = _reads(monkeypatch)
    first = kept.read(keys, T0)
    assert asked == [len(keys)]
    again = kept.read(keys[:3] + keys[-1:], T0)
    assert asked == [len(keys)], "kept rows were read from the store again"
    assert first == fresh.read(keys, T0)
    assert again == first[:3] + first[-1:]
    assert first[-1] is None
    assert all(r is not None for r in first[:-1])
    assert (kept.found_kept, kept.read_rows, kept.kept_rows) == (4, len(keys), len(keys))
    # A caller changing its record changes nothing kept.
    again[0]["spend"] = -1.0
    assert kept.read(keys[:1], T0) == first[:1]
    # Point in time still holds for kept rows: before a row's instant it is not served.
    earlier = T0 - timedelta(days=5)
    assert kept.read(keys[:1], earlier)[0] is None
    assert kept.read(keys[:1], earlier) == fresh.read(keys[:1], earlier)


def test_a_write_by_another_connection_lets_every_kept_row_go(repo) -> None:
    store, folder = repo
    kept = FeatureReader(store, "stats", cache_rows=100)
    before = kept.read([["c03"]], T0)[0]
    assert before["spend"] == 30.0
    # Another store object, as another process materialising would be: its own connection.
    _write(_store(folder, folder / "stats.parquet"), "c03", 333.0, T0 - timedelta(hours=1))
    after = kept.read([["c03"]], T0)[0]
    assert after["spend"] == 333.0
    assert after["tier"] == "new"
    assert after == FeatureReader(store, "stats").read([["c03"]], T0)[0]


def test_a_write_through_the_readers_own_store_lets_every_kept_row_go(repo) -> None:
    store, _ = repo
    kept = FeatureReader(store, "stats", cache_rows=100)
    assert kept.read([["c05"]], T0)[0]["spend"] == 50.0
    _write(store, "c05", 555.0, T0 - timedelta(hours=1))
    assert kept.read([["c05"]], T0)[0]["spend"] == 555.0


def test_at_most_cache_rows_are_kept_the_latest_asked(repo, monkeypatch) -> None:
    store, _ = repo
    kept = FeatureReader(store, "stats", cache_rows=3)
    fresh = FeatureReader(store, "stats")
    keys = [[cid] for cid in IDS]
    assert kept.read(keys, T0) == fresh.read(keys, T0)
    assert list(kept._cache) == [tuple(k) for k in keys[-3:]]
    asked = _reads(monkeypatch)
    assert kept.read(keys[-3:], T0) == fresh.read(keys[-3:], T0)
    assert asked == [3], "only the fresh reader's read reached the store"
    assert kept.read(keys[:1], T0) == fresh.read(keys[:1], T0)
    assert asked == [3, 1, 1]


def test_without_cache_rows_every_read_reaches_the_store(repo, monkeypatch) -> None:
    store, _ = repo
    reader = FeatureReader(store, "stats")
    asked = _reads(monkeypatch)
    reader.read([["c01"]], T0)
    reader.read([["c01"]], T0)
    assert asked == [1, 1]
    assert (reader.found_kept, reader.read_rows, reader.kept_rows) == (0, 2, 0)
