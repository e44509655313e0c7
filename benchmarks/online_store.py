"""Online store benchmarks: bulk SQLite materialisation and online read latency.

Targets (issue: online store): `FeatureStore.materialize` of 1,000,000 customers x 20 features
into SQLite at 50,000 entity rows/s or more (Feast's stock SQLite store: ~2,500 rows/s), and
`get_online_features` with a FeatureService for one entity at p99 <= 2 ms.

The same materialisation into Redis (issue: scale-out): `BulkRedisOnlineStore` at 50,000
entity rows/s or more beside Feast's stock RedisOnlineStore (~2,500 rows/s).

Run through `python -m benchmarks materialize materialize_redis online_read` (see
benchmarks/features.py).
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from feast import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    RepoConfig,
    ValueType,
)
from feast.types import Float64, Int64, String

from features.store.redis_bulk import STORE_TYPE as REDIS_STORE_TYPE
from features.store.sqlite_bulk import STORE_TYPE

PROJECT = "bench"
END = datetime(2024, 6, 1, tzinfo=UTC)
START = END - timedelta(days=365)
FLOATS = [f"f{i:02d}" for i in range(16)]
INTS = ["orders_90d", "contacts_90d"]
STRINGS = ["segment", "region"]
STOCK_ROWS = 100_000
REDIS_ROWS = 20_000  # the stock (slow) path fills Redis; latency hardly depends on key count
READS = {1: 2_000, 10: 1_000, 100: 300}


def _customer_table(customers: int, seed: int = 7) -> pa.Table:
    """One row per customer: 16 float64, 2 int64 and 2 string features, a few nulls."""
    rng = np.random.default_rng(seed)
    ids = pa.array([f"C{i:08d}" for i in range(customers)])
    seconds = rng.integers(0, int((END - START).total_seconds()), customers)
    event_ts = (np.datetime64(START.replace(tzinfo=None), "us") + seconds * 1_000_000).astype(
        "datetime64[us]"
    )
    columns: dict[str, Any] = {
        "customer_id": ids,
        "event_timestamp": pa.array(event_ts, pa.timestamp("us", tz="UTC")),
        "created": pa.array(event_ts + np.timedelta64(5, "m"), pa.timestamp("us", tz="UTC")),
    }
    for name in FLOATS:
        values = rng.normal(size=customers)
        columns[name] = pa.array(values, mask=rng.random(customers) < 0.02)
    for name in INTS:
        columns[name] = pa.array(rng.integers(0, 50, customers), pa.int64())
    segments = np.array(["new", "loyal", "at_risk", "lapsed"])
    regions = np.array(["DE-N", "DE-S", "FR", "PL", "NL", "AT"])
    columns["segment"] = pa.array(segments[rng.integers(0, len(segments), customers)])
    columns["region"] = pa.array(regions[rng.integers(0, len(regions), customers)])
    return pa.table(columns)


def _parquet(out: Path, customers: int) -> Path:
    path = out / "online_store" / f"customers-{customers}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_customer_table(customers), path, row_group_size=256_000)
    return path


def _definitions(parquet: Path) -> tuple[Entity, FeatureView, FeatureService]:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    source = FileSource(
        path=str(parquet), timestamp_field="event_timestamp", created_timestamp_column="created"
    )
    schema = [Field(name="customer_id", dtype=String)]
    schema += [Field(name=name, dtype=Float64) for name in FLOATS]
    schema += [Field(name=name, dtype=Int64) for name in INTS]
    schema += [Field(name=name, dtype=String) for name in STRINGS]
    view = FeatureView(
        name="customer_bench",
        entities=[customer],
        ttl=timedelta(days=400),
        source=source,
        schema=schema,
    )
    return customer, view, FeatureService(name="customer_bench_v1", features=[view])


def _store(folder: Path, online_store: dict[str, Any], provider: str) -> FeatureStore:
    config = RepoConfig(
        project=PROJECT,
        provider=provider,
        registry=str(folder / "registry.db"),
        online_store=online_store,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=str(folder),
    )
    return FeatureStore(config=config)


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _bulk_store(folder: Path) -> FeatureStore:
    return _store(
        folder,
        {"type": STORE_TYPE, "path": str(folder / "online.db")},
        "features.store.provider.BulkProvider",
    )


def _materialize(store: FeatureStore, parquet: Path) -> float:
    """Apply the definitions and time one `materialize` over the whole data."""
    store.apply(list(_definitions(parquet)))
    started = time.perf_counter()
    store.materialize(START - timedelta(days=1), END + timedelta(days=1))
    return time.perf_counter() - started


def bench_materialize(customers: int = 1_000_000, out: Path = Path("benchmarks/out")) -> None:
    """Time `FeatureStore.materialize`: bulk SQLite at `customers`, stock SQLite at 100,000."""
    print(f"\n## materialize {customers:,} customers x 20 features into SQLite")
    parquet = _parquet(out, customers)
    folder = _fresh(out / "online_store" / f"bulk-{customers}")
    bulk_s = _materialize(_bulk_store(folder), parquet)
    bulk_rate = customers / bulk_s
    print(f"  bulk SQLite  {customers:>9,} rows  {bulk_s:7.2f} s  {bulk_rate:>10,.0f} rows/s")
    (folder / "materialized").write_text(str(customers))

    # The online-store half alone: write_arrow on a table already in memory.
    store = _bulk_store(folder)
    view = store.get_feature_view("customer_bench")
    table = pq.read_table(parquet)
    provider: Any = store._get_provider()
    shuffled = table.take(np.random.default_rng(1).permutation(table.num_rows))
    # A fresh table: drop the materialised one so every row is an insert.
    provider.online_store.update(store.config, [view], [], [], [], False)
    started = time.perf_counter()
    provider.online_store.write_arrow(store.config, view, shuffled)
    write_s = time.perf_counter() - started
    print(
        f"  write_arrow only (fresh table)    {write_s:7.2f} s  "
        f"{customers / write_s:>10,.0f} rows/s (offline read excluded)"
    )
    started = time.perf_counter()
    provider.online_store.write_arrow(store.config, view, shuffled)
    rewrite_s = time.perf_counter() - started
    print(
        f"  write_arrow again (all no-op)     {rewrite_s:7.2f} s  "
        f"{customers / rewrite_s:>10,.0f} rows/s (older/equal rows lose the upsert)"
    )

    stock_rows = min(STOCK_ROWS, customers)
    stock_parquet = _parquet(out, stock_rows)
    stock_folder = _fresh(out / "online_store" / f"stock-{stock_rows}")
    stock_store = _store(
        stock_folder, {"type": "sqlite", "path": str(stock_folder / "online.db")}, "local"
    )
    stock_s = _materialize(stock_store, stock_parquet)
    stock_rate = stock_rows / stock_s
    print(f"  stock SQLite {stock_rows:>9,} rows  {stock_s:7.2f} s  {stock_rate:>10,.0f} rows/s")
    same_folder = _fresh(out / "online_store" / f"bulk-{stock_rows}")
    same_s = _materialize(_bulk_store(same_folder), stock_parquet)
    print(
        f"  bulk SQLite  {stock_rows:>9,} rows  {same_s:7.2f} s  "
        f"{stock_rows / same_s:>10,.0f} rows/s"
    )
    print(
        f"  ratio bulk@{customers:,} / stock@{stock_rows:,}: {bulk_rate / stock_rate:,.1f}x "
        f"(target: bulk >= 50,000 rows/s)"
    )


def bench_materialize_redis(
    redis_url: str, customers: int = 1_000_000, out: Path = Path("benchmarks/out")
) -> None:
    """Time `FeatureStore.materialize` into Redis: bulk at `customers`, stock at 20,000.

    Args:
        redis_url: Feast Redis connection string of an empty server (databases 0 and 1 used).
        customers: Customers materialised through the bulk store.
        out: Benchmark output folder.
    """
    print(f"\n## materialize {customers:,} customers x 20 features into Redis")
    stock_rows = min(REDIS_ROWS, customers)
    stock_folder = _fresh(out / "online_store" / "redis-stock")
    stock_store = _store(
        stock_folder, {"type": "redis", "connection_string": f"{redis_url},db=0"}, "local"
    )
    stock_s = _materialize(stock_store, _parquet(out, stock_rows))
    stock_rate = stock_rows / stock_s
    print(f"  stock Redis  {stock_rows:>9,} rows  {stock_s:7.2f} s  {stock_rate:>10,.0f} rows/s")
    bulk_folder = _fresh(out / "online_store" / "redis-bulk")
    bulk_store = _store(
        bulk_folder,
        {"type": REDIS_STORE_TYPE, "connection_string": f"{redis_url},db=1"},
        "features.store.provider.BulkProvider",
    )
    bulk_s = _materialize(bulk_store, _parquet(out, customers))
    bulk_rate = customers / bulk_s
    print(f"  bulk Redis   {customers:>9,} rows  {bulk_s:7.2f} s  {bulk_rate:>10,.0f} rows/s")
    started = time.perf_counter()
    bulk_store.materialize(START - timedelta(days=1), END + timedelta(days=1))
    again_s = time.perf_counter() - started
    print(
        f"  bulk Redis again (all no-op)  {again_s:7.2f} s  {customers / again_s:>10,.0f} rows/s "
        "(stored timestamps read, no row newer)"
    )
    print(
        f"  ratio bulk@{customers:,} / stock@{stock_rows:,}: {bulk_rate / stock_rate:,.1f}x "
        f"(target: bulk >= 50,000 rows/s)"
    )
    for store in (stock_store, bulk_store):
        store.teardown()  # leave the server as it was found


def _percentiles(store: FeatureStore, service: FeatureService, ids: np.ndarray) -> list[str]:
    rng = np.random.default_rng(3)
    lines = []
    for entities, calls in READS.items():
        for _ in range(50):  # warm the registry cache, statement cache and page cache
            rows = [{"customer_id": c} for c in rng.choice(ids, entities)]
            store.get_online_features(features=service, entity_rows=rows)
        times = np.empty(calls)
        for i in range(calls):
            rows = [{"customer_id": c} for c in rng.choice(ids, entities)]
            started = time.perf_counter()
            store.get_online_features(features=service, entity_rows=rows)
            times[i] = time.perf_counter() - started
        p50, p99 = np.percentile(times, [50, 99]) * 1e3
        lines.append(
            f"  {entities:>3} entities  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({calls} calls)"
        )
    return lines


def bench_online_read(
    out: Path = Path("benchmarks/out"),
    redis_url: str | None = None,
    customers: int = 1_000_000,
) -> None:
    """Time `get_online_features` with a FeatureService for 1, 10 and 100 entities.

    Args:
        out: Benchmark output folder (reuses bench_materialize's store when present).
        redis_url: Feast Redis connection string (e.g. "localhost:6390"); None skips Redis.
        customers: Customers in the bulk SQLite store read from.
    """
    parquet = _parquet(out, customers)
    folder = out / "online_store" / f"bulk-{customers}"
    if (folder / "materialized").exists():
        store = _bulk_store(folder)
    else:
        _materialize(_bulk_store(_fresh(folder)), parquet)
        (folder / "materialized").write_text(str(customers))
        store = _bulk_store(folder)
    service = store.get_feature_service("customer_bench_v1")
    ids = np.array([f"C{i:08d}" for i in range(customers)])
    print(f"\n## get_online_features, FeatureService of 20 features ({customers:,} in store)")
    print("  bulk SQLite")
    for line in _percentiles(store, service, ids):
        print(line)
    if redis_url is None:
        return
    redis_parquet = _parquet(out, REDIS_ROWS)
    redis_folder = _fresh(out / "online_store" / "redis")
    redis_store = _store(redis_folder, {"type": "redis", "connection_string": redis_url}, "local")
    _materialize(redis_store, redis_parquet)
    service = redis_store.get_feature_service("customer_bench_v1")
    print(f"  Redis (stock RedisOnlineStore, {REDIS_ROWS:,} in store)")
    for line in _percentiles(redis_store, service, ids[:REDIS_ROWS]):
        print(line)
    redis_store.teardown()  # leave the server as it was found
