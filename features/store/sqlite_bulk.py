"""A Feast online store on SQLite whose write path is vectorised.

Feast's stock SQLite store runs one SQL statement per (entity, feature) value and, during
materialisation, first builds one Python `ValueProto` per value; that caps it near 2,500
entity rows/s. This store keeps ONE row per entity in one table per feature view::

    entity_key BLOB PRIMARY KEY   -- Feast's own serialize_entity_key bytes (v3)
    event_ts   INTEGER            -- microseconds since the epoch, UTC
    created_ts INTEGER NULL       -- microseconds since the epoch, UTC
    layout_id  INTEGER            -- which feature names, in which order, `vals` holds
    vals       BLOB               -- a serialized feast.types.RepeatedValue

`vals` holds one `Value` per feature. `write_arrow` builds those bytes for a whole Arrow table
at once with numpy (`features.store.bulk_encoding`: protobuf wire format written directly,
byte for byte what `Value.SerializeToString()` gives), sorts the rows by key and upserts
them with `executemany` inside one transaction. A read parses one `RepeatedValue` per entity.

Upsert rule (the order Feast uses to pick the latest row offline): an incoming row replaces
the stored one when its event_ts is newer, or when the event timestamps are equal and its
created_ts is newer or equal. A missing created_ts ranks below any present one; equal
timestamps on both sides mean the later write wins, so re-materialising an interval is
idempotent. Rows in one batch are resolved by the same rule before they reach SQLite.

A row always carries the entity's whole feature vector for the view. Unlike the stock store
(one SQL row per feature), a generic `online_write_batch` of only some features replaces the
entity's row, so the features it did not carry then read as missing; `write_arrow` insists on
every feature column.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from feast import Entity
from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import RepeatedValue
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType as ValueTypeProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from pydantic import PositiveInt, StrictStr

from features.store.bulk_encoding import (
    LOWEST_TS,
    encode_values,
    latest_rows,
    prefetched,
)

log = logging.getLogger(__name__)

STORE_TYPE = "features.store.sqlite_bulk.BulkSqliteOnlineStore"
LAYOUT_TABLE = "feast_bulk_layouts"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
# Stay far below SQLITE_MAX_VARIABLE_NUMBER (32,766 since 3.32) on large multi-key reads.
_READ_BATCH = 500
_COUNT = struct.Struct("<I")
_STRING_HEADER = struct.Struct("<II")


class BulkSqliteOnlineStoreConfig(FeastConfigBaseModel):
    """Configuration of `BulkSqliteOnlineStore` (`online_store:` in feature_store.yaml)."""

    type: Literal["features.store.sqlite_bulk.BulkSqliteOnlineStore"] = STORE_TYPE
    """Online store type selector: the dotted path of the store class."""

    path: StrictStr = "data/online_bulk.db"
    """Path of the SQLite file; a relative path is taken from the repo path."""

    write_chunk_rows: PositiveInt = 131_072
    """Rows encoded and handed to `executemany` at a time; bounds memory, not atomicity."""


def _micros(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is UTC, as everywhere in Feast."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_US


def layout_id(feature_names: Sequence[str]) -> int:
    """Content hash naming a feature layout: the same names in the same order, the same id.

    A hash rather than a counter, so an id never changes meaning when tables are dropped and
    recreated and a reader may cache it forever.
    """
    digest = hashlib.blake2b("\x1f".join(feature_names).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def string_entity_key(join_keys: Sequence[str], values: Sequence[str]) -> bytes:
    """Feast's `serialize_entity_key` (version 3) of an entity key whose values are strings,
    without building its proto: the count, then the join keys in sorted order, then their
    values, each as its type, length and UTF-8 bytes."""
    pairs = sorted(zip(join_keys, values, strict=True)) if len(join_keys) > 1 else None
    names, strings = (join_keys, values) if pairs is None else zip(*pairs, strict=True)
    parts = [_COUNT.pack(len(join_keys))]
    for text in (*names, *strings):
        encoded = text.encode("utf8")
        parts += [_STRING_HEADER.pack(ValueTypeProto.STRING, len(encoded)), encoded]
    return b"".join(parts)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _upsert_sql(table_name: str) -> str:
    t = _quote(table_name)
    return (
        f"INSERT INTO {t} (entity_key, event_ts, created_ts, layout_id, vals) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(entity_key) DO UPDATE SET "
        "event_ts = excluded.event_ts, created_ts = excluded.created_ts, "
        "layout_id = excluded.layout_id, vals = excluded.vals "
        f"WHERE excluded.event_ts > {t}.event_ts OR (excluded.event_ts = {t}.event_ts "
        f"AND coalesce(excluded.created_ts, {LOWEST_TS}) "
        f">= coalesce({t}.created_ts, {LOWEST_TS}))"
    )


# --- the store -----------------------------------------------------------------------------


class BulkSqliteOnlineStore(OnlineStore):
    """SQLite online store with one row per entity and a vectorised bulk write path.

    Reads go through Feast's ordinary `get_online_features`, or `read_values` for a caller
    that reads a few entities many times a second; bulk writes come through
    `write_arrow` (materialisation routed by `features.store.provider.BulkProvider`), and
    Feast's generic `online_write_batch` still works for pushes and small writes.
    """

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._conn_path: str | None = None
        self._conn_config: RepoConfig | None = None
        self._lock = threading.Lock()
        self._layouts: dict[int, tuple[str, ...]] = {}
        self._picks: dict[tuple[int, tuple[str, ...] | None], list[tuple[str, int]]] = {}
        self._positions: dict[tuple[int, tuple[str, ...]], list[int | None]] = {}
        # This store's own writes, counted: SQLite's `data_version` does not count them.
        self._writes = 0

    # -- connection and tables --

    @staticmethod
    def db_path(config: RepoConfig) -> Path:
        """Where the SQLite file lives for this repo config."""
        path = Path(config.online_store.path)
        if config.repo_path and not path.is_absolute():
            path = Path(config.repo_path) / path
        return path

    def _get_conn(self, config: RepoConfig) -> sqlite3.Connection:
        if self._conn is not None and self._conn_config is config:
            return self._conn  # the per-read fast path: no path arithmetic
        path = str(self.db_path(config))
        if self._conn is not None and self._conn_path == path:
            self._conn_config = config
            return self._conn
        with self._lock:
            if self._conn is None or self._conn_path != path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                # Autocommit mode: transactions are opened explicitly around each write.
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                # Page size only takes on a new file; 8 KiB pages measured ~20% faster bulk
                # inserts of ~250-byte rows than the 4 KiB default, and no slower reads.
                conn.execute("PRAGMA page_size = 8192")
                conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
                conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL-safe
                conn.execute("PRAGMA busy_timeout = 10000")
                conn.execute("PRAGMA temp_store = MEMORY")
                conn.execute("PRAGMA cache_size = -131072")  # 128 MiB of page cache
                conn.execute("PRAGMA mmap_size = 1073741824")  # reads straight from the map
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {LAYOUT_TABLE} "
                    "(layout_id INTEGER PRIMARY KEY, feature_names TEXT NOT NULL)"
                )
                if self._conn is not None:
                    self._conn.close()  # the config now points at another file
                self._conn, self._conn_path = conn, path
            self._conn_config = config
        return self._conn

    @staticmethod
    def _ensure_table(conn: sqlite3.Connection, table_name: str) -> None:
        # WITHOUT ROWID keeps each row inside the primary-key B-tree: one lookup per read and
        # one tree to grow per insert (measured ~2x faster point reads than a rowid table).
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_quote(table_name)} ("
            "entity_key BLOB PRIMARY KEY, event_ts INTEGER NOT NULL, created_ts INTEGER, "
            "layout_id INTEGER NOT NULL, vals BLOB NOT NULL) WITHOUT ROWID"
        )

    @staticmethod
    def table_name(config: RepoConfig, table: Any) -> str:
        """SQLite table of a feature view (Feast's naming, versioned names included)."""
        versioning = config.registry.enable_online_feature_view_versioning
        return compute_table_id(config.project, table, versioning)

    def _layout_names(self, conn: sqlite3.Connection, ident: int) -> tuple[str, ...]:
        names = self._layouts.get(ident)
        if names is None:
            row = conn.execute(
                f"SELECT feature_names FROM {LAYOUT_TABLE} WHERE layout_id = ?", (ident,)
            ).fetchone()
            if row is None:
                raise RuntimeError(f"online store row refers to unknown layout {ident}")
            names = tuple(json.loads(row[0]))
            self._layouts[ident] = names
        return names

    def _write_rows(
        self,
        conn: sqlite3.Connection,
        table_name: str,
        layouts: Iterable[tuple[str, ...]],
        chunks: Iterable[Iterable[tuple]],
        *,
        unique_keys: bool = False,
    ) -> int:
        """Upsert row chunks and their layouts in ONE transaction; return rows changed.

        With `unique_keys` (no key twice across all chunks) an empty table takes plain
        INSERTs: about twice as fast as the upsert, and nothing can conflict.
        """
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_table(conn, table_name)
                sql = _upsert_sql(table_name)
                if unique_keys:
                    # The IMMEDIATE transaction holds the write lock: the table stays empty.
                    probe = f"SELECT 1 FROM {_quote(table_name)} LIMIT 1"
                    if conn.execute(probe).fetchone() is None:
                        sql = sql[: sql.index(" ON CONFLICT")]
                # Registered in the same transaction as the rows, so a reader never meets a
                # row whose layout is not there yet.
                conn.executemany(
                    f"INSERT OR IGNORE INTO {LAYOUT_TABLE} (layout_id, feature_names) "
                    "VALUES (?, ?)",
                    [(layout_id(names), json.dumps(names)) for names in layouts],
                )
                changed = 0
                for rows in chunks:
                    before = conn.total_changes
                    conn.executemany(sql, rows)
                    changed += conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                self._writes += 1
        return changed

    def generation(self, config: RepoConfig) -> tuple[int, int]:
        """A token that changes whenever what this store reads may have changed, and stays
        equal while nothing has: SQLite's `data_version` (it moves when any other connection
        commits, another process's materialisation included) and this store's own writes
        and table changes, which `data_version` does not count. A caller may keep what it
        read while the token it read it under is the current one."""
        conn = self._get_conn(config)
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        return int(version), self._writes

    # -- bulk write --

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
            How many stored rows were inserted or replaced.

        Raises:
            ValueError: A join key or the event timestamp has missing values, or a column is
                missing.
        """
        started = time.perf_counter()
        latest = latest_rows(config, feature_view, table, timestamp_field, created_timestamp_column)
        if latest is None:
            return 0
        keys, event_us, created_us, keep = (
            latest.keys,
            latest.event_us,
            latest.created_us,
            latest.order,
        )
        feature_table, types = latest.features, latest.value_types
        prepared = time.perf_counter()

        conn = self._get_conn(config)
        table_name = self.table_name(config, feature_view)
        names = tuple(feature_table.column_names)
        ident = layout_id(names)
        step = config.online_store.write_chunk_rows

        def rows(start: int) -> list[tuple]:
            # Rows in key order, so SQLite appends to its B-tree instead of splitting pages.
            take = keep.slice(start, step)
            part = feature_table.take(take)
            blobs = (
                encode_values([c.combine_chunks() for c in part.columns], types).to_pylist()
                if types
                else [b""] * len(take)  # a view of join keys only: an empty RepeatedValue
            )
            return list(
                zip(
                    keys.take(take).to_pylist(),
                    event_us.take(take).to_pylist(),
                    created_us.take(take).to_pylist(),
                    itertools.repeat(ident, len(take)),
                    blobs,
                    strict=True,
                )
            )

        chunks = prefetched(rows, range(0, len(keep), step))
        changed = self._write_rows(conn, table_name, [names], chunks, unique_keys=True)
        log.info(
            "wrote %d of %d rows (%d entities) to %s: keys and dedup %.2f s, "
            "encode and insert %.2f s",
            changed,
            table.num_rows,
            len(keep),
            table_name,
            prepared - started,
            time.perf_counter() - prepared,
        )
        return changed

    # -- Feast's OnlineStore interface --

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Generic per-row write (pushes, precomputed vectors); same upsert rule as bulk."""
        conn = self._get_conn(config)
        version = config.entity_key_serialization_version
        rows = []
        layouts: set[tuple[str, ...]] = set()
        for entity_key, values, event_ts, created_ts in data:
            names = tuple(values)
            layouts.add(names)
            rows.append(
                (
                    serialize_entity_key(entity_key, entity_key_serialization_version=version),
                    _micros(event_ts),
                    None if created_ts is None else _micros(created_ts),
                    layout_id(names),
                    RepeatedValue(val=list(values.values())).SerializeToString(),
                )
            )
        self._write_rows(conn, self.table_name(config, table), layouts, [rows])
        if progress:
            progress(len(data))

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Latest row per entity key, aligned with `entity_keys`; (None, None) if unknown."""
        conn = self._get_conn(config)
        version = config.entity_key_serialization_version
        keys = [
            serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys
        ]
        found = self._stored(conn, self.table_name(config, table), keys)
        wanted = tuple(requested_features) if requested_features is not None else None
        result: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            hit = found.get(key)
            if hit is None:
                result.append((None, None))
                continue
            event_ts, ident, vals = hit
            picks = self._picks.get((ident, wanted))
            if picks is None:
                names = self._layout_names(conn, ident)
                picks = [
                    (name, i) for i, name in enumerate(names) if wanted is None or name in wanted
                ]
                self._picks[(ident, wanted)] = picks
            values = RepeatedValue.FromString(vals).val
            result.append((_EPOCH + event_ts * _ONE_US, {name: values[i] for name, i in picks}))
        return result

    def read_values(
        self,
        config: RepoConfig,
        table: FeatureView,
        join_keys: Sequence[str],
        entity_values: Sequence[Sequence[str]],
        features: Sequence[str],
    ) -> list[tuple[int, list[ValueProto | None]] | None]:
        """`online_read` for string join keys, without entity-key protos: per entity (its
        values in `join_keys` order), the latest row's event time in microseconds since the
        epoch and its `features` values in that order (None for a feature the row lacks);
        None for an unknown entity. A request reads one to a dozen entities, and building
        the protos, serializing them and keying each row's values by name cost more than
        the SQLite lookup itself."""
        conn = self._get_conn(config)
        version = config.entity_key_serialization_version
        if version == 3:
            keys = [string_entity_key(join_keys, values) for values in entity_values]
        else:
            keys = [
                serialize_entity_key(
                    EntityKeyProto(
                        join_keys=list(join_keys),
                        entity_values=[ValueProto(string_val=v) for v in values],
                    ),
                    entity_key_serialization_version=version,
                )
                for values in entity_values
            ]
        found = self._stored(conn, self.table_name(config, table), keys)
        wanted = tuple(features)
        result: list[tuple[int, list[ValueProto | None]] | None] = []
        for key in keys:
            hit = found.get(key)
            if hit is None:
                result.append(None)
                continue
            event_ts, ident, vals = hit
            positions = self._positions.get((ident, wanted))
            if positions is None:
                index = {name: i for i, name in enumerate(self._layout_names(conn, ident))}
                positions = [index.get(name) for name in wanted]
                self._positions[(ident, wanted)] = positions
            values = RepeatedValue.FromString(vals).val
            result.append((event_ts, [None if i is None else values[i] for i in positions]))
        return result

    @staticmethod
    def _stored(
        conn: sqlite3.Connection, table_name: str, keys: Sequence[bytes]
    ) -> dict[bytes, tuple[int, int, bytes]]:
        """Serialized entity key → its stored (event_ts, layout_id, vals), for those found."""
        t = _quote(table_name)
        if len(keys) == 1:
            sql = f"SELECT entity_key, event_ts, layout_id, vals FROM {t} WHERE entity_key = ?"
            rows: list[tuple] = conn.execute(sql, keys).fetchall()
        else:
            rows = []
            for start in range(0, len(keys), _READ_BATCH):
                batch = keys[start : start + _READ_BATCH]
                marks = ",".join("?" * len(batch))
                sql = (
                    f"SELECT entity_key, event_ts, layout_id, vals FROM {t} "
                    f"WHERE entity_key IN ({marks})"
                )
                rows += conn.execute(sql, batch).fetchall()
        return {key: (event_ts, ident, vals) for key, event_ts, ident, vals in rows}

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Create a table per kept feature view and drop the deleted views' tables."""
        conn = self._get_conn(config)
        with self._lock:
            for view in tables_to_keep:
                self._ensure_table(conn, self.table_name(config, view))
            for view in tables_to_delete:
                name = self.table_name(config, view)
                conn.execute(f"DROP TABLE IF EXISTS {_quote(name)}")
            self._writes += 1

    def teardown(
        self,
        config: RepoConfig,
        tables: Sequence[FeatureView],
        entities: Sequence[Entity],
    ) -> None:
        """Remove the whole SQLite file, as the stock SQLite store does on `feast teardown`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn, self._conn_path, self._conn_config = None, None, None
            self._writes += 1
        path = self.db_path(config)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
