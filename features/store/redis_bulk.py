"""Feast's Redis online store with a vectorised bulk write path for materialisation.

Feast's `RedisOnlineStore.online_write_batch` takes one Python `ValueProto` per (entity,
feature) value, serializes each on its own and queues one redis-py command per entity; with
the per-command packing and reply handling of redis-py that caps materialisation near 2,500
entity rows/s, and Feast has no columnar write hook for an online store. `write_arrow` writes
the same Redis layout for a whole Arrow table instead:

- key: Feast's `serialize_entity_key` (version 3) followed by the project name;
- one hash field per feature, the 4-byte murmur3 of "view:feature", holding the feature's
  serialized `Value` (an empty Value for a null);
- `_ts:<view>`: the serialized `google.protobuf.Timestamp` of the row's event time
  (versioned view names where the registry versions online views, as Feast does).

Values come from `features.store.bulk_encoding` (the encoder the SQLite bulk store uses, bare
Values here), and the Redis protocol of every command is written with numpy too: a chunk of
rows becomes one buffer sent on one connection, its replies read afterwards (a pipeline
without a transaction, as Feast's own writes). Reads stay Feast's own, so a value written here
reads back exactly as one written by Feast.

Upsert rule, Feast's: a row is written only when its event timestamp is newer than the stored
`_ts` (equal or older rows are skipped; the created timestamp is not stored). Within one table
the newest row per entity by event then created timestamp is the one compared, as the offline
store orders rows. The read of stored timestamps and the write are separate round trips, as in
Feast, so two concurrent writers of one entity may still race; `skip_dedup: true` skips the
read as Feast's option does. `key_ttl_seconds` adds Feast's EXPIRE per written key. A Redis
Cluster needs each key routed to its slot, which this single-connection path does not do:
there `BulkProvider` leaves materialisation to Feast's stock path.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np
import pyarrow as pa
from feast.feature_view import FeatureView
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    RedisType,
    _versioned_fv_name,
)
from feast.repo_config import RepoConfig
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import PositiveInt
from redis.connection import Connection

from features.store.bulk_encoding import (
    Block,
    binary_array,
    binary_buffers,
    compact,
    constant,
    decimal_block,
    latest_rows,
    padded_block,
    prefetched,
    value_blocks,
    varint_block,
    varint_sizes,
)

log = logging.getLogger(__name__)

STORE_TYPE = "features.store.redis_bulk.BulkRedisOnlineStore"

_US_PER_S = 1_000_000
_NS_PER_US = 1_000
_TAG_SECONDS = b"\x08"  # google.protobuf.Timestamp.seconds = 1, varint
_TAG_NANOS = b"\x10"  # google.protobuf.Timestamp.nanos = 2, varint


class BulkRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Configuration of `BulkRedisOnlineStore`: Feast's Redis options plus the chunk size."""

    type: Literal["features.store.redis_bulk.BulkRedisOnlineStore"] = STORE_TYPE  # type: ignore[assignment]
    """Online store type selector: the dotted path of the store class."""

    write_chunk_rows: PositiveInt = 20_000
    """Entity rows encoded and sent at a time; bounds client and server buffers."""


def _bulk_string(parts: list[bytes | Block], n: int) -> list[Block]:
    """Blocks of a row built from constant bytes and per-row blocks, constants merged."""
    blocks: list[Block] = []
    pending = b""
    for part in parts:
        if isinstance(part, bytes):
            pending += part
            continue
        if pending:
            blocks.append(constant(pending, n))
            pending = b""
        blocks.append(part)
    if pending:
        blocks.append(constant(pending, n))
    return blocks


def _argument(value: bytes) -> bytes:
    """One constant argument in the Redis protocol."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _timestamp_blocks(event_us: np.ndarray) -> tuple[list[Block], np.ndarray]:
    """Serialized `Timestamp` of each microsecond instant, as `Timestamp.FromDatetime` gives."""
    seconds = np.floor_divide(event_us, _US_PER_S)
    nanos = (event_us - seconds * _US_PER_S) * _NS_PER_US
    n = len(event_us)
    has_seconds, has_nanos = seconds != 0, nanos != 0
    seconds_u, nanos_u = seconds.view(np.uint64), nanos.view(np.uint64)
    length = np.where(has_seconds, 1 + varint_sizes(seconds_u), 0) + np.where(
        has_nanos, 1 + varint_sizes(nanos_u), 0
    )
    blocks = [
        constant(_TAG_SECONDS, n, has_seconds),
        varint_block(seconds_u, has_seconds),
        constant(_TAG_NANOS, n, has_nanos),
        varint_block(nanos_u, has_nanos),
    ]
    return blocks, length


def _nanos(stored: bytes | None) -> int:
    """Nanoseconds since the epoch of a stored `_ts` field; 0 when absent, as Feast reads it."""
    if not stored:
        return 0
    ts = Timestamp.FromString(stored)
    return ts.seconds * 1_000_000_000 + ts.nanos


class BulkRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store plus `write_arrow`, a vectorised bulk write.

    Reads, pushes (`online_write_batch`), `update` and `teardown` are Feast's own; bulk writes
    come through `write_arrow` (materialisation routed by `features.store.provider.BulkProvider`).
    """

    @staticmethod
    def bulk_enabled(config: RepoConfig) -> bool:
        """Whether `write_arrow` can write to this store (not to a Redis Cluster)."""
        return config.online_store.redis_type != RedisType.redis_cluster

    def write_arrow(
        self,
        config: RepoConfig,
        feature_view: FeatureView,
        table: pa.Table,
        *,
        timestamp_field: str | None = None,
        created_timestamp_column: str | None = None,
    ) -> int:
        """Write an Arrow table of feature rows, keeping the latest row per entity.

        Args:
            config: The repo config.
            feature_view: The view the rows belong to.
            table: Join-key columns, one column per feature (named as the view's features)
                and the event timestamp column; the created timestamp column if the source
                has one. Several rows per entity are fine: the newest wins.
            timestamp_field: Event timestamp column; defaults to the batch source's.
            created_timestamp_column: Created timestamp column; defaults to the batch
                source's (none if the source has none).

        Returns:
            How many entities were written (rows no newer than the stored ones are not).

        Raises:
            ValueError: A join key or the event timestamp has missing values, a column is
                missing, or the store is a Redis Cluster.
        """
        online_config = config.online_store
        if not self.bulk_enabled(config):
            raise ValueError("write_arrow does not route keys to Redis Cluster slots")
        started = time.perf_counter()
        latest = latest_rows(config, feature_view, table, timestamp_field, created_timestamp_column)
        if latest is None:
            return 0
        view_name = _versioned_fv_name(feature_view, config)
        ts_field = f"_ts:{view_name}".encode()
        fields = [_mmh3(f"{view_name}:{name}") for name in latest.features.column_names]
        project = config.project.encode()
        ttl_s = online_config.key_ttl_seconds
        step = online_config.write_chunk_rows
        event_us = latest.event_us.to_numpy()

        def commands(start: int) -> tuple[bytes | None, pa.Array, np.ndarray]:
            """A chunk's HGET of the stored timestamps, its HSETs (one per row), event ns."""
            take = latest.order.slice(start, step)
            n = len(take)
            offsets, data = binary_buffers(latest.keys.take(take), pa.large_binary())
            key = [
                b"$",
                decimal_block(np.diff(offsets) + len(project)),
                b"\r\n",
                padded_block(offsets, data),
                project + b"\r\n",
            ]
            lookups = None
            if not online_config.skip_dedup:
                lookup = [b"*3\r\n" + _argument(b"HGET"), *key, _argument(ts_field)]
                lookups = compact(_bulk_string(lookup, n), n)[1].tobytes()
            chunk_us = event_us[take.to_numpy()]
            ts_blocks, ts_len = _timestamp_blocks(chunk_us)
            parts: list[bytes | Block] = [b"*%d\r\n" % (4 + 2 * len(fields)) + _argument(b"HSET")]
            parts += [*key, _argument(ts_field), b"$", decimal_block(ts_len), b"\r\n"]
            parts += [*ts_blocks, b"\r\n"]
            part = latest.features.take(take)
            for field, column, value_type in zip(
                fields, part.columns, latest.value_types, strict=True
            ):
                blocks, length = value_blocks(column.combine_chunks(), value_type)
                parts += [_argument(field), b"$", decimal_block(length), b"\r\n"]
                parts += [*blocks, b"\r\n"]
            if ttl_s:
                parts += [b"*3\r\n" + _argument(b"EXPIRE"), *key, _argument(b"%d" % ttl_s)]
            writes = binary_array(*compact(_bulk_string(parts, n), n))
            return lookups, writes, chunk_us * _NS_PER_US

        client = self._get_client(online_config)
        connection = client.connection_pool.get_connection()
        written = 0
        try:
            for lookups, writes, event_ns in prefetched(
                commands, range(0, len(latest.order), step)
            ):
                if lookups is not None:
                    connection.send_packed_command([lookups], check_health=False)
                    stored = np.fromiter(
                        (_nanos(connection.read_response()) for _ in range(len(writes))),
                        dtype=np.int64,
                        count=len(writes),
                    )
                    # Feast's rule: skip a row unless it is newer than the stored timestamp.
                    newer = (stored == 0) | (event_ns > stored)
                    writes = writes.filter(pa.array(newer))
                if not len(writes):
                    continue
                _send_all(connection, writes)
                for _ in range(len(writes) * (2 if ttl_s else 1)):
                    connection.read_response()
                written += len(writes)
        except BaseException:
            connection.disconnect()  # unread replies would answer the next command
            raise
        finally:
            client.connection_pool.release(connection)
        log.info(
            "wrote %d of %d rows (%d entities) to Redis for %s in %.2f s",
            written,
            table.num_rows,
            len(latest.order),
            view_name,
            time.perf_counter() - started,
        )
        return written


def _send_all(connection: Connection, commands: pa.Array) -> None:
    """Send a binary array's values, already in the Redis protocol, back to back."""
    offsets, data = binary_buffers(commands, pa.large_binary())
    connection.send_packed_command(
        [memoryview(data[int(offsets[0]) : int(offsets[-1])])], check_health=False
    )
