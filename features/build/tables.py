"""Build every feature table from raw tables and publish them atomically.

Each table is conformed to its Feast view's schema (missing tables give missing values, not
missing columns) and published as a new version (`features.versioned`), so readers see the
previous complete set or the new one, never a mix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView
from feast.types import Bool, Float64, Int64, String

from features import versioned
from features.build.customers import customer_feature_chunks
from features.build.offers import customer_category_features, order_features
from features.build.shipments import shipment_feature_chunks
from features.instants import watermark
from features.repo import feature_views, join_keys

log = logging.getLogger(__name__)


def _one(builder: Callable[[dict[str, pa.Table]], pa.Table | None]):
    """A builder that makes its table in one piece, as a chunk builder."""

    def chunks(tables: dict[str, pa.Table]) -> Iterator[pa.Table]:
        built = builder(tables)
        if built is not None:
            yield built

    return chunks


# view name → (chunk builder, offline folder). Chunk builders yield pieces of the table so
# that the largest (customer snapshots) never has to fit in memory at once; a view's table is
# a folder of Parquet parts, so parts can also be written by several processes.
BUILDERS: dict[str, tuple[Callable[[dict[str, pa.Table]], Iterator[pa.Table]], str]] = {
    "customer_snapshots": (customer_feature_chunks, "customer_snapshots"),
    "shipment_events": (shipment_feature_chunks, "shipment_events"),
    "customer_category": (_one(customer_category_features), "customer_category"),
    "order_contents": (_one(order_features), "orders"),
}

ROW_GROUP_ROWS = 256_000


def part_name(index: int) -> str:
    """File name of the index-th part of a view's offline table."""
    return f"part-{index:05d}.parquet"


_ARROW = {Float64: pa.float64(), Int64: pa.int64(), String: pa.string(), Bool: pa.bool_()}


def view_arrow_schema(view: FeatureView) -> pa.Schema:
    """Arrow schema of a view's offline table: join keys, timestamps, then features."""
    fields = [pa.field(k, pa.string()) for k in join_keys(view)]
    fields += [
        pa.field("event_ts", pa.timestamp("us", tz="UTC")),
        pa.field("created_ts", pa.timestamp("us", tz="UTC")),
    ]
    fields += [pa.field(f.name, _ARROW[f.dtype]) for f in view.features]
    return pa.schema(fields)


def conform(built: pa.Table, view: FeatureView, created: pd.Timestamp) -> pa.Table:
    """Cast a built table to the view's schema; absent features become nulls."""
    schema = view_arrow_schema(view)
    n = built.num_rows
    arrays = []
    for field in schema:
        if field.name == "created_ts":
            arrays.append(pa.array(np.full(n, created.value // 1000), pa.int64()).cast(field.type))
        elif field.name in built.column_names:
            arrays.append(built.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def build_feature_tables(
    tables: dict[str, pa.Table], created: pd.Timestamp | None = None
) -> dict[str, pa.Table]:
    """Compute every feature table the raw tables allow, in memory (small data, tests).

    Args:
        tables: Raw contract tables.
        created: `created_ts` of every row; by default the data's watermark, so rebuilding
            the same data gives the same tables and a build over newer data wins ties.
    """
    created = created if created is not None else watermark(tables)
    views = {v.name: v for v in feature_views()}
    out = {}
    for name, (builder, _) in BUILDERS.items():
        chunks = [conform(chunk, views[name], created) for chunk in builder(tables)]
        if chunks:
            out[name] = pa.concat_tables(chunks)
    return out


def publish_tables(feature_tables: dict[str, pa.Table], root: Path) -> Path:
    """Publish tables already in memory as a new version (see `write_feature_tables`)."""
    return _publish({name: iter([table]) for name, table in feature_tables.items()}, root)


def write_feature_tables(
    tables: dict[str, pa.Table],
    root: Path,
    created: pd.Timestamp | None = None,
    record: dict | None = None,
    added: tuple[Path, dict[str, Callable[[dict[str, pa.Table]], Iterator[pa.Table]]]]
    | None = None,
) -> Path:
    """Compute every feature table chunk by chunk, straight into a new published version
    (`record`: facts the version keeps, `versioned.write_metadata`). With `added` (a
    previous version, and view → chunk builder), those views keep the previous version's
    parts and get the builder's rows as one more part (`features.build.increment`).

    Returns:
        The published version folder.
    """
    created = created if created is not None else watermark(tables)
    views = {v.name: v for v in feature_views()}
    builders = {name: builder for name, (builder, _) in BUILDERS.items()}
    previous = None
    if added is not None:
        previous, extra = added
        builders |= extra

    def conformed(name: str, builder) -> Iterator[pa.Table]:
        started, rows = time.perf_counter(), 0
        for chunk in builder(tables):
            rows += chunk.num_rows
            yield conform(chunk, views[name], created)
        log.info("%s: %d rows in %.1f s", name, rows, time.perf_counter() - started)

    chunks = {name: conformed(name, builder) for name, builder in builders.items()}
    kept = () if added is None else tuple(added[1])
    return _publish(chunks, root, record, previous, kept)


def _publish(
    chunks_by_view: dict[str, Iterator[pa.Table]],
    root: Path,
    record: dict | None = None,
    previous: Path | None = None,
    kept: tuple[str, ...] = (),
) -> Path:
    """Write each view's chunks into a staging folder, then publish it atomically; the
    `kept` views first get the `previous` version's parts (hard links), and their chunks go
    into the next part.

    Views without rows get an empty table, so every Feast source exists.
    """
    staging = versioned.staging_dir(root)
    try:
        if record is not None:
            versioned.write_metadata(staging, record)
        views = {v.name: v for v in feature_views()}
        for name, (_, folder) in BUILDERS.items():
            schema = view_arrow_schema(views[name])
            (staging / folder).mkdir()
            part = 0
            if previous is not None and name in kept:
                part = versioned.link_parts(previous / folder, staging / folder)
            with pq.ParquetWriter(staging / folder / part_name(part), schema) as writer:
                for chunk in chunks_by_view.get(name, iter(())):
                    writer.write_table(chunk, row_group_size=ROW_GROUP_ROWS)
    except BaseException:
        versioned.discard(staging)
        raise
    return versioned.publish(staging)
