"""Build feature tables with several processes.

Work is cut into units — a range of customers for the snapshots, a whole table for the
others, or, after a day's append, the snapshot rows the day adds to the previous version's
(`features.build.increment`) — and handed to worker processes started fresh (spawn: no
inherited Arrow thread state). Each worker reads only the raw columns its current view
needs, keeps them while it works on that view, and writes each unit as one Parquet part
into the staging folder; the parent publishes the folder once every unit is written.
Results are identical to the single-process build: the same chunks, the same code, the
same `created_ts`.

Given a `dask.distributed` client (`AFTERSALE_DASK_ADDRESS`), the same units run as tasks of
its workers instead, which must import this project and see the raw and feature folders at
the same paths; they write the same parts.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import versioned
from features.build import customers as customer_build
from features.build import increment
from features.build.common import spans
from features.build.tables import (
    BUILDERS,
    ROW_GROUP_ROWS,
    conform,
    part_name,
    view_arrow_schema,
    watermark,
    write_feature_tables,
)
from features.contract.io import read_validated
from features.contract.schema import CONTRACT
from features.instants import SCHEDULED_COLUMNS, utc_instant
from features.repo import feature_views

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

# Raw columns each view reads (None: every column of the table).
NEEDS: dict[str, dict[str, list[str] | None]] = {
    "customer_snapshots": {
        "customers": None,
        "orders": ["order_id", "customer_id", "order_ts", "amount"],
        "shipments": ["order_id", "promised_ts", "delivered_ts"],
        "contacts": ["customer_id", *customer_build.CONTACT_COLUMNS],
        "returns": ["order_id", "requested_ts", "refunded_ts"],
        "offers": ["customer_id", "ts", "offer_type", "accepted_ts"],
        "invoices": ["customer_id", "due_date", "paid_ts"],
    },
    "shipment_events": {
        "shipments": None,
        "tracking_events": None,
        "order_items": None,
        "products": ["product_id", "weight_g"],
        "orders": ["order_id", "customer_id", "order_ts", "amount"],
        "customers": ["customer_id", "timezone"],
    },
    "customer_category": {
        "order_items": None,
        "products": ["product_id", "category"],
        "orders": ["order_id", "customer_id", "order_ts"],
        "returns": ["order_id", "product_id", "requested_ts"],
    },
    "order_contents": {
        "orders": ["order_id", "customer_id", "order_ts", "amount"],
        "order_items": None,
        "products": ["product_id", "category"],
        "shipments": ["order_id", "shipped_ts", "promised_ts", "delivered_ts"],
    },
}


@dataclass(frozen=True)
class Unit:
    """One part of one view: a range of customers (snapshots), a whole table, or the
    snapshot rows after `since` added to the `previous` version's (`features.build.increment`).
    """

    view: str
    part: int
    lo: int = 0
    hi: int = 0
    since: str | None = None
    previous: str | None = None


def watermark_of(raw: Path, *, happened: bool = False) -> pd.Timestamp:
    """The latest instant in a raw folder, from Parquet statistics (no data read); with
    `happened`, of things that happened only (see `features.build.tables.watermark`)."""
    latest = []
    for name, schema in CONTRACT.items():
        path = raw / f"{name}.parquet"
        if not path.is_file():
            continue
        meta = pq.ParquetFile(path).metadata
        columns = {meta.schema.column(i).name: i for i in range(meta.num_columns)}
        for column in schema.columns:
            if column.kind != "timestamp" or column.name not in columns:
                continue
            if happened and (name, column.name) in SCHEDULED_COLUMNS:
                continue
            for group in range(meta.num_row_groups):
                stats = meta.row_group(group).column(columns[column.name]).statistics
                if stats is not None and stats.has_min_max:
                    latest.append(utc_instant(stats.max))
    return max(latest)


# Customers in one unit of the snapshot table: units short enough that the workers end
# together, long enough that cutting the tables to each costs little.
UNIT_CUSTOMERS = 100_000


# Worker state: the raw tables of the view the worker is on (and of which raw folder: a Dask
# worker outlives one build), and, for the customer snapshots, where the data end. A Dask
# worker may run units on several threads: they share the state under the lock.
_state: dict = {}
_state_lock = threading.Lock()


def _tables_for(raw: Path, view: str) -> tuple[dict[str, pa.Table], pd.Timestamp | None]:
    """The raw tables a view reads, and (customer snapshots only) the data's end
    (`customer_build.data_end`), which every range of customers ends at."""
    with _state_lock:
        if _state.get("key") != (str(raw), view):
            _state.clear()
            needs = NEEDS[view]
            _state["tables"] = read_validated(raw, tables=list(needs), columns=needs)
            _state["key"] = (str(raw), view)
        tables = _state["tables"]
        if view == "customer_snapshots" and "end" not in _state:
            _state["end"] = customer_build.data_end(tables)
        return tables, _state.get("end")


def _forget() -> None:
    """Drop a worker's state (a Dask worker's, once a build is done)."""
    with _state_lock:
        _state.clear()


def _run(raw: Path, staging: Path, created: pd.Timestamp, unit: Unit) -> tuple[Unit, int, float]:
    """Build one unit and write it as a part; returns its row count and seconds."""
    started = time.perf_counter()
    tables, end = _tables_for(raw, unit.view)
    view = next(v for v in feature_views() if v.name == unit.view)
    builder, folder = BUILDERS[unit.view]
    if unit.since is not None and unit.previous is not None:
        since = pd.Timestamp(unit.since)
        restated = increment.previous_rows_after(Path(unit.previous), since)
        chunks = increment.snapshot_increment(tables, since, restated)
    elif unit.view == "customer_snapshots":
        chunks = customer_build.range_snapshots(tables, unit.lo, unit.hi, end)
    else:
        # Whole tables stream chunk by chunk (shipments come in ranges of shipments).
        chunks = builder(tables)
    rows = 0
    with pq.ParquetWriter(staging / folder / part_name(unit.part), view_arrow_schema(view)) as w:
        for chunk in chunks:
            rows += chunk.num_rows
            w.write_table(conform(chunk, view, created), row_group_size=ROW_GROUP_ROWS)
    return unit, rows, time.perf_counter() - started


def _ranges(view: str, total: int, size: int) -> list[Unit]:
    return [Unit(view, part, lo, hi) for part, (lo, hi) in enumerate(spans(total, size))]


def plan(raw: Path, chunk_customers: int, added: Unit | None = None) -> list[Unit]:
    """Units, longest first: the whole tables (shipments, the longest, streams its ranges
    inside one unit so its inputs are prepared once), then customer ranges, short units
    that let the workers end together; or, with the snapshot rows `added` to a previous
    version's, those first and then the whole tables."""
    units = [Unit(view, 0) for view in ("shipment_events", "customer_category", "order_contents")]
    if added is not None:
        return [added, *units]
    customers = pq.ParquetFile(raw / "customers.parquet").metadata.num_rows
    units += _ranges("customer_snapshots", customers, chunk_customers)
    return units


def build_parallel(
    raw: Path,
    root: Path,
    workers: int = 2,
    chunk_customers: int = UNIT_CUSTOMERS,
    client: Client | None = None,
    extension: increment.Extension | None = None,
) -> Path:
    """Build every feature table from a validated raw folder with `workers` processes, or
    as tasks of a Dask `client`'s workers, and publish them as a new version under `root`;
    with an `extension`, the customer snapshots are the previous version's with the rows
    after its end added (`features.build.increment`)."""
    created = watermark_of(raw)
    if extension is not None:
        created = extension.created_after(created)
    staging = versioned.staging_dir(root)
    try:
        since = watermark_of(raw, happened=True)
        versioned.write_metadata(staging, increment.build_record(raw, since, created))
        added = None
        if extension is not None:
            folder = BUILDERS[increment.VIEW][1]
            part = versioned.link_parts(extension.previous / folder, staging / folder)
            added = Unit(
                increment.VIEW,
                part,
                since=extension.since.isoformat(),
                previous=str(extension.previous),
            )
        for _, folder in BUILDERS.values():
            (staging / folder).mkdir(exist_ok=True)
        if client is None:
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        else:
            # Dask's executor hands back concurrent futures: the same loop gathers them.
            pool = client.get_executor(pure=False)
        try:
            with pool:
                futures = [
                    pool.submit(_run, raw, staging, created, unit)
                    for unit in plan(raw, chunk_customers, added)
                ]
                for future in as_completed(futures):
                    unit, rows, seconds = future.result()
                    log.info("%s part %d: %d rows in %.1f s", unit.view, unit.part, rows, seconds)
        finally:
            if client is not None:
                client.run(_forget)
        views = {v.name: v for v in feature_views()}
        for name, (_, folder) in BUILDERS.items():
            if not any((staging / folder).iterdir()):
                pq.write_table(
                    view_arrow_schema(views[name]).empty_table(), staging / folder / part_name(0)
                )
    except BaseException:
        versioned.discard(staging)
        raise
    return versioned.publish(staging)


# Below this many customers, starting worker processes costs more than it saves.
PARALLEL_FROM_CUSTOMERS = 200_000


def publish_features(
    raw: Path, root: Path, workers: int | None = None, client: Client | None = None
) -> tuple[Path, pd.Timestamp]:
    """Build and publish the feature tables of a validated raw folder.

    Args:
        raw: The published raw folder.
        root: Where feature versions are published.
        workers: Processes to use; None chooses by size (one for small data, else up to
            the machine's cores, at most four).
        client: A Dask client whose workers run the units instead, whatever the size.

    Returns:
        The published version folder and the raw data's watermark.
    """
    if client is not None:
        return build_parallel(raw, root, client=client), watermark_of(raw)
    if workers is None:
        customers = pq.ParquetFile(raw / "customers.parquet").metadata.num_rows
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        workers = min(cores, 4) if customers >= PARALLEL_FROM_CUSTOMERS else 1
    extension = increment.extendable(raw, versioned.current(root))
    if workers > 1:
        return build_parallel(raw, root, workers, extension=extension), watermark_of(raw)
    if extension is not None:
        return publish_increment(raw, root, extension), watermark_of(raw)
    tables = read_validated(raw)
    created = watermark(tables)
    record = increment.build_record(raw, watermark(tables, happened=True), created)
    return write_feature_tables(tables, root, created, record), created


def publish_increment(raw: Path, root: Path, extension: increment.Extension) -> Path:
    """Publish the previous version's customer snapshots with the rows after its data's end
    added (`features.build.increment`), and the other tables built whole, as a new version."""
    tables = read_validated(raw)
    created = extension.created_after(watermark(tables))
    restated = increment.previous_rows_after(extension.previous, extension.since)

    def rows_after(raw_tables: dict[str, pa.Table]) -> Iterator[pa.Table]:
        return increment.snapshot_increment(raw_tables, extension.since, restated)

    record = increment.build_record(raw, watermark(tables, happened=True), created)
    added = (extension.previous, {increment.VIEW: rows_after})
    return write_feature_tables(tables, root, created, record, added)
