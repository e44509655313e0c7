"""BulkRedisOnlineStore against a real redis-server: the same hashes, byte for byte, as Feast's
stock Redis store writes for the same rows, the same `get_online_features` answers, and
Feast's newer-timestamp rule."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp
from feast.value_type import ValueType

from features.store.bulk_encoding import decimal_block
from features.store.local_redis import throwaway_redis
from features.store.provider import BulkProvider
from features.store.redis_bulk import STORE_TYPE, BulkRedisOnlineStore

T0 = datetime(2024, 6, 1, tzinfo=UTC)
START, END = T0 - timedelta(days=30), T0 + timedelta(days=1)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with throwaway_redis() as found:
        if found is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        yield found


def _connection(address: str, db: int, flushed: bool = True) -> str:
    host, port = address.split(":")
    if flushed:
        redis.Redis(host=host, port=int(port), db=db).flushdb()
    return f"{address},db={db}"


def _hashes(address: str, db: int) -> dict[bytes, dict[bytes, bytes]]:
    host, port = address.split(":")
    client = redis.Redis(host=host, port=int(port), db=db)
    return {key: client.hgetall(key) for key in client.scan_iter()}


def test_decimal_block_writes_ascii_lengths() -> None:
    values = np.array([0, 7, 10, 99, 100, 123456])
    block = decimal_block(values)
    lens = block.lens if block.lens is not None else [block.data.shape[1]] * len(values)
    got = [bytes(row[:size]) for row, size in zip(block.data, lens, strict=True)]
    assert got == [str(v).encode() for v in values]


# --- a Feast repo, materialised through the stock store and through the bulk store ---------


def _source_frame() -> pd.DataFrame:
    """Nulls of every type, NaN, negative and large ints, unicode, and an entity's history."""
    rng = np.random.default_rng(11)
    rows = []
    for i in range(300):
        event = START + timedelta(seconds=int(rng.integers(0, 25 * 86_400)), microseconds=i)
        rows.append(
            {
                "customer_id": f"c{i % 250:04d}",  # 50 entities have two rows
                "event_ts": event,
                "created_ts": event + timedelta(minutes=5),
                "spend": None if i % 4 == 0 else float(rng.normal() * 1e3),
                "ratio": float("nan") if i % 6 == 0 else float(rng.random()),
                "orders": None if i % 5 == 0 else int(rng.integers(-(2**40), 2**40)),
                "tier": None if i % 3 == 0 else ["gold", "", "bronzé", "x" * 300][i % 4],
                "active": None if i % 7 == 0 else bool(i % 2),
                "visits": None if i % 8 == 0 else int(rng.integers(-(2**31), 2**31 - 1)),
                "last_seen": None if i % 9 == 0 else event - timedelta(days=int(i)),
            }
        )
    # An entity whose event time is the epoch's second boundary (a Timestamp without nanos).
    rows.append({"customer_id": "whole", "event_ts": T0, "created_ts": T0, "spend": 1.0})
    frame = pd.DataFrame(rows)
    frame["orders"] = frame["orders"].astype("Int64")
    frame["active"] = frame["active"].astype("boolean")
    frame["visits"] = frame["visits"].astype("Int32")
    frame["last_seen"] = pd.to_datetime(frame["last_seen"], utc=True)
    return frame


def _definitions(parquet: Path) -> list[Any]:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    source = FileSource(
        path=str(parquet), timestamp_field="event_ts", created_timestamp_column="created_ts"
    )
    view = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=timedelta(days=60),
        source=source,
        schema=[
            Field(name="customer_id", dtype=String),
            Field(name="spend", dtype=Float64),
            Field(name="ratio", dtype=Float32),
            Field(name="orders", dtype=Int64),
            Field(name="tier", dtype=String),
            Field(name="active", dtype=Bool),
            Field(name="visits", dtype=Int32),
            Field(name="last_seen", dtype=UnixTimestamp),
        ],
    )
    return [customer, view, FeatureService(name="customer_stats_v1", features=[view])]


def _repo(folder: Path, parquet: Path, connection: str, bulk: bool) -> FeatureStore:
    folder.mkdir()
    config = RepoConfig(
        project="redistest",
        provider="features.store.provider.BulkProvider" if bulk else "local",
        registry=str(folder / "registry.db"),
        online_store={"type": STORE_TYPE if bulk else "redis", "connection_string": connection},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=str(folder),
    )
    store = FeatureStore(config=config)
    store.apply(_definitions(parquet))
    return store


def _read(store: FeatureStore, ids: list[str]) -> dict[str, list[Any]]:
    rows = [{"customer_id": cid} for cid in ids]
    service = store.get_feature_service("customer_stats_v1")
    return store.get_online_features(features=service, entity_rows=rows).to_dict()


@pytest.fixture(scope="module")
def stores(address: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ...]:
    folder = tmp_path_factory.mktemp("redis_repo")
    parquet = folder / "source.parquet"
    frame = _source_frame()
    frame.to_parquet(parquet)
    stock = _repo(folder / "stock", parquet, _connection(address, 0), bulk=False)
    bulk = _repo(folder / "bulk", parquet, _connection(address, 1), bulk=True)
    for store in (stock, bulk):
        store.materialize(START, END)
    return frame, stock, bulk


def test_materialize_goes_through_write_arrow(stores: tuple[Any, ...]) -> None:
    _, _, bulk = stores
    provider = bulk._get_provider()
    assert isinstance(provider, BulkProvider)
    assert isinstance(provider.online_store, BulkRedisOnlineStore)
    assert provider._bulk_store(bulk.get_feature_view("customer_stats")) is not None


def test_same_hashes_byte_for_byte_as_stock(stores: tuple[Any, ...], address: str) -> None:
    frame, _, _ = stores
    stock_hashes, bulk_hashes = _hashes(address, 0), _hashes(address, 1)
    assert len(stock_hashes) == frame["customer_id"].nunique()
    assert bulk_hashes == stock_hashes


def test_same_online_features_as_stock(stores: tuple[Any, ...]) -> None:
    frame, stock, bulk = stores
    ids = [*sorted(set(frame["customer_id"])), "nobody"]
    got, want = _read(bulk, ids), _read(stock, ids)
    assert got == want
    at = ids.index("whole")
    assert got["spend"][at] == 1.0


# --- the rule, on the store alone ------------------------------------------------------------


def _bare(address: str, db: int, store_type: str) -> RepoConfig:
    return RepoConfig(
        project="unit",
        provider="local",
        registry="unused.db",
        online_store={"type": store_type, "connection_string": _connection(address, db, False)},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )


def _bare_view() -> FeatureView:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    source = FileSource(
        path="unused.parquet", timestamp_field="event_ts", created_timestamp_column="created_ts"
    )
    return FeatureView(
        name="unit_view",
        entities=[customer],
        source=source,
        schema=[Field(name="customer_id", dtype=String), Field(name="score", dtype=Float64)],
    )


def _rows(*rows: tuple[str, float, datetime, datetime | None]) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "score": [r[1] for r in rows],
            "event_ts": pa.array([r[2] for r in rows], ts),
            "created_ts": pa.array([r[3] for r in rows], ts),
        }
    )


def _score(store: RedisOnlineStore, config: RepoConfig, view: FeatureView, key: str) -> Any:
    entity = EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(string_val=key)])
    [(_, values)] = store.online_read(config, view, [entity])
    # Feast's Redis store answers an unknown entity with empty Values.
    if values is None or values["score"].WhichOneof("val") is None:
        return None
    return values["score"].double_val


def test_only_newer_event_timestamps_replace_stored_rows(address: str) -> None:
    _connection(address, 2)
    config, view, store = _bare(address, 2, STORE_TYPE), _bare_view(), BulkRedisOnlineStore()
    t, c = T0, T0 + timedelta(hours=1)
    assert store.write_arrow(config, view, _rows(("a", 1.0, t, c), ("b", 1.0, t, None))) == 2
    # Older event, or the same event (whatever its created timestamp): skipped, as in Feast.
    assert store.write_arrow(config, view, _rows(("a", 2.0, t - timedelta(seconds=1), c))) == 0
    assert store.write_arrow(config, view, _rows(("a", 3.0, t, c + timedelta(1)))) == 0
    assert _score(store, config, view, "a") == 1.0
    # Newer by a microsecond: written.
    assert store.write_arrow(config, view, _rows(("a", 4.0, t + timedelta(microseconds=1), c))) == 1
    assert _score(store, config, view, "a") == 4.0
    # Within one table the newest event, then the newest created timestamp, is the candidate.
    batch = _rows(
        ("c", 7.0, t, c), ("c", 8.0, t + timedelta(1), None), ("c", 9.0, t + timedelta(1), c)
    )
    assert store.write_arrow(config, view, batch) == 1
    assert _score(store, config, view, "c") == 9.0
    assert _score(store, config, view, "nobody") is None


def test_rule_holds_against_rows_written_by_feast(address: str) -> None:
    _connection(address, 3)
    config, view = _bare(address, 3, STORE_TYPE), _bare_view()
    entity = EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(string_val="a")])
    stock = RedisOnlineStore()
    stock.online_write_batch(
        config, view, [(entity, {"score": ValueProto(double_val=5.0)}, T0, None)], None
    )
    store = BulkRedisOnlineStore()
    assert store.write_arrow(config, view, _rows(("a", 1.0, T0, None))) == 0
    assert store.write_arrow(config, view, _rows(("a", 2.0, T0 + timedelta(1), None))) == 1
    assert _score(store, config, view, "a") == 2.0


def test_skip_dedup_and_key_ttl(address: str) -> None:
    config = _bare(address, 4, STORE_TYPE)
    config.online_store.skip_dedup = True
    config.online_store.key_ttl_seconds = 600
    view, store = _bare_view(), BulkRedisOnlineStore()
    store.write_arrow(config, view, _rows(("a", 1.0, T0, None)))
    assert store.write_arrow(config, view, _rows(("a", 2.0, T0 - timedelta(1), None))) == 1
    assert _score(store, config, view, "a") == 2.0
    host, port = address.split(":")
    client = redis.Redis(host=host, port=int(port), db=4)
    [key] = client.keys()
    assert 0 < client.ttl(key) <= 600


def test_write_arrow_error_paths(address: str) -> None:
    config, view, store = _bare(address, 5, STORE_TYPE), _bare_view(), BulkRedisOnlineStore()
    with pytest.raises(ValueError, match="lacks columns"):
        store.write_arrow(config, view, _rows(("a", 1.0, T0, None)).drop_columns(["score"]))
    assert store.write_arrow(config, view, _rows(("a", 1.0, T0, None)).slice(0, 0)) == 0
    config.online_store.redis_type = "redis_cluster"
    with pytest.raises(ValueError, match="Cluster"):
        store.write_arrow(config, view, _rows(("a", 1.0, T0, None)))
