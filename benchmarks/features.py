"""Feature benchmarks: building every feature table for N simulated customers, and the
online store (materialisation speed, online read latency on SQLite and Redis).

Targets (issue: features): build features for 1,000,000 customers within 120 s on this
machine; materialise 1,000,000 customer rows into SQLite at 50,000 rows/s or more; online
read through a FeatureService with p99 <= 2 ms for one entity.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.foundation import _run_measured, _sim_dir
from benchmarks.online_store import bench_materialize as _bench_materialize
from benchmarks.online_store import bench_materialize_redis as _bench_materialize_redis
from benchmarks.online_store import bench_online_read as _bench_online_read
from features.store.local_redis import throwaway_redis


def build_once(raw: str, out: str) -> None:
    """Publish every feature table of a validated raw folder (run in a child process)."""
    from features.build.parallel import publish_features

    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    started = time.perf_counter()
    version, _ = publish_features(Path(raw), Path(out))
    total = time.perf_counter() - started
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in version.glob("*/*.parquet"))
    print(f"  {rows:,} feature rows written; in-process total {total:.1f} s")


def bench_features(customers: int, out: Path) -> None:
    raw = _sim_dir(out, customers)
    print(f"\n## build features ({customers:,} customers)")
    if not (raw / "customers.parquet").exists():
        from benchmarks.foundation import bench_simulate

        bench_simulate(customers, out)
    target = out / f"features-{customers}"
    shutil.rmtree(target, ignore_errors=True)
    code = f"from benchmarks.features import build_once; build_once({str(raw)!r}, {str(target)!r})"
    wall, peak_gib = _run_measured([sys.executable, "-c", code])
    started = time.perf_counter()
    for path in raw.glob("*.parquet"):
        pq.read_table(path)
    floor = time.perf_counter() - started
    print(f"  wall {wall:.1f} s (target ≤ 120 s at 1,000,000), peak RSS {peak_gib:.2f} GiB")
    print(
        f"  baseline: reading the raw tables with pyarrow {floor:.1f} s; build / read = "
        f"{wall / floor:.1f}×"
    )


def bench_materialize(customers: int, out: Path) -> None:
    _bench_materialize(customers=customers, out=out)


def bench_materialize_redis(customers: int, out: Path) -> None:
    with throwaway_redis() as redis_url:
        if redis_url is None:
            print("  (redis-server not installed: Redis materialisation skipped)")
            return
        _bench_materialize_redis(redis_url=redis_url, customers=customers, out=out)


def bench_online_read(customers: int, out: Path) -> None:
    with throwaway_redis() as redis_url:
        if redis_url is None:
            print("  (redis-server not installed: Redis figures skipped)")
        _bench_online_read(out=out, redis_url=redis_url, customers=customers)
