"""Vectorised encoding of Arrow feature rows into the bytes Feast's online stores hold.

Feast builds one Python `ValueProto` per (entity, feature) value and serializes it on its own;
at a million entities of twenty features that alone takes minutes. The functions here write
the same protobuf wire format for a whole Arrow column at once with numpy, byte for byte what
`Value.SerializeToString()` and `serialize_entity_key` (version 3) give, so a bulk writer can
fill any online store whose layout is built from those bytes:

- `value_blocks`: each row's `Value` of one column, bare (a Redis hash field) or framed as one
  entry of a `RepeatedValue` (`encode_values`: one SQLite row per entity);
- `encode_entity_keys`: Feast's serialized entity key per row;
- `latest_per_key`: which row wins per entity (newest event timestamp, then created);
- `supports_bulk`: which feature views a bulk writer may take.

Every output row is a concatenation of "blocks". A block is a (rows, width) uint8 matrix of
which row i contributes its first lens[i] bytes. Laying the blocks side by side and keeping the
used bytes with one boolean mask yields all rows' bytes back to back (numpy's C order): no
Python loop over rows, and no per-byte scatter.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.feature_view import FeatureView
from feast.protos.feast.types.Value_pb2 import ValueType as ValueTypeProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

log = logging.getLogger(__name__)

# A missing created timestamp ranks below any present one.
LOWEST_TS = -(2**63)

_Chunk = TypeVar("_Chunk")

# Wire-format tags of feast.types.Value fields: (field number << 3) | wire type.
_TAG_BYTES = 0x0A  # bytes_val = 1, length-delimited; also RepeatedValue.val = 1
_TAG_STRING = 0x12  # string_val = 2, length-delimited
_TAG_INT32 = 0x18  # int32_val = 3, varint
_TAG_INT64 = 0x20  # int64_val = 4, varint
_TAG_DOUBLE = 0x29  # double_val = 5, 64-bit
_TAG_FLOAT = 0x35  # float_val = 6, 32-bit
_TAG_BOOL = 0x38  # bool_val = 7, varint

_FAST_VALUE_TYPES = {
    ValueType.DOUBLE,
    ValueType.FLOAT,
    ValueType.INT64,
    ValueType.INT32,
    ValueType.BOOL,
    ValueType.STRING,
    ValueType.BYTES,
}
_ENTITY_KEY_TYPES = {
    ValueType.STRING: ValueTypeProto.STRING,
    ValueType.BYTES: ValueTypeProto.BYTES,
    ValueType.INT64: ValueTypeProto.INT64,
    ValueType.INT32: ValueTypeProto.INT32,
}


# Rows of blocks built at a time are sized so the padded matrix stays near this many bytes.
_BLOCK_BUDGET = 64 * 2**20
# Width assumed for a value serialized by Feast's converter before it has been converted.
_CONVERTED_WIDTH_GUESS = 256


@dataclass(frozen=True)
class Block:
    """A (rows, width) uint8 matrix; row i contributes data[i, :lens[i]] (all if lens is None)."""

    data: np.ndarray
    lens: np.ndarray | None = None


def constant(data: bytes, n: int, mask: np.ndarray | None = None) -> Block:
    """The same bytes on every row (on the rows where `mask` holds)."""
    block = np.broadcast_to(np.frombuffer(data, dtype=np.uint8), (n, len(data)))
    return Block(block, None if mask is None else np.where(mask, len(data), 0))


def varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes each uint64 takes as a protobuf varint (1 to 10)."""
    sizes = np.ones(len(values), dtype=np.int64)
    top = int(values.max()) if len(values) else 0
    bits = 7
    while bits < 64 and top >= 1 << bits:
        sizes += values >= np.uint64(1 << bits)
        bits += 7
    return sizes


def varint_block(values: np.ndarray, mask: np.ndarray | None = None) -> Block:
    """Protobuf varints of uint64 values (int64 two's complement, as protobuf writes it)."""
    sizes = varint_sizes(values)
    width = int(sizes.max()) if len(values) else 1
    data = np.empty((len(values), width), dtype=np.uint8)
    for k in range(width):
        seven = ((values >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        data[:, k] = seven | ((sizes > k + 1).astype(np.uint8) << 7)
    if mask is not None:
        return Block(data, np.where(mask, sizes, 0))
    return Block(data, None if bool((sizes == width).all()) else sizes)


def decimal_block(values: np.ndarray) -> Block:
    """Non-negative integers as ASCII decimal digits (the lengths in the Redis protocol)."""
    values = values.astype(np.int64)
    sizes = np.ones(len(values), dtype=np.int64)
    top = int(values.max()) if len(values) else 0
    power = 10
    while top >= power:
        sizes += values >= power
        power *= 10
    width = int(sizes.max()) if len(values) else 1
    data = np.empty((len(values), width), dtype=np.uint8)
    for k in range(width):
        # Digit k from the left of a number of `sizes` digits; columns past its end are unused.
        exponent = np.maximum(sizes - 1 - k, 0)
        data[:, k] = (values // np.power(10, exponent) % 10 + ord("0")).astype(np.uint8)
    return Block(data, None if bool((sizes == width).all()) else sizes)


def padded_block(offsets: np.ndarray, data: np.ndarray, mask: np.ndarray | None = None) -> Block:
    """Variable-length bytes (Arrow-style offsets into `data`) padded to the longest row."""
    sizes = np.diff(offsets)
    if mask is not None:
        sizes = np.where(mask, sizes, 0)
    n = len(sizes)
    width = int(sizes.max()) if n else 0
    total = int(sizes.sum())
    if total == n * width and mask is None:
        # Every row has the same length (ids like "C00000042"): the data is the matrix.
        start = int(offsets[0]) if n else 0
        return Block(data[start : start + total].reshape(n, width))
    block = np.zeros((n, width), dtype=np.uint8)
    if total:
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        rows = np.repeat(np.arange(n), sizes)
        block[rows, within] = data[np.repeat(offsets[:-1], sizes) + within]
    return Block(block, sizes)


def compact(blocks: Sequence[Block], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the blocks row by row; return Arrow-style offsets and the bytes."""
    matrix = np.concatenate([b.data for b in blocks], axis=1)
    if all(b.lens is None for b in blocks):
        row_len = np.full(n, matrix.shape[1], dtype=np.int64)
        buf = matrix.reshape(-1)
    else:
        keep = np.concatenate(
            [
                np.ones(b.data.shape, dtype=bool)
                if b.lens is None
                else np.arange(b.data.shape[1]) < b.lens[:, None]
                for b in blocks
            ],
            axis=1,
        )
        buf = matrix[keep]
        row_len = keep.sum(axis=1, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_len, out=offsets[1:])
    return offsets, buf


def binary_array(offsets: np.ndarray, buf: np.ndarray) -> pa.Array:
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(buf)]
    )


def binary_buffers(column: pa.Array, binary_type: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (int64, rows + 1) and data (uint8) of a string/binary column."""
    array = column.cast(binary_type)
    _, offsets_buf, data_buf = array.buffers()
    # A sliced array shares its parent's buffers; its offsets start at index `offset`.
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=array.offset + len(array) + 1)
    offsets = offsets[array.offset :]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    )
    return offsets, data


def _validity(column: pa.Array) -> np.ndarray | None:
    """Row mask of non-null values, or None when nothing is null."""
    if not column.null_count:
        return None
    return column.is_valid().to_numpy(zero_copy_only=False)


def _numeric(column: pa.Array, arrow_type: pa.DataType, numpy_type: str) -> np.ndarray:
    """The column as a contiguous little-endian numpy array; nulls become zero."""
    values = column.cast(arrow_type).fill_null(0).to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=numpy_type)


def _fixed(
    tag: int, payload: np.ndarray, valid: np.ndarray | None, framed: bool
) -> tuple[list[Block], np.ndarray]:
    """A fixed-width value: [RepeatedValue tag, length,] Value tag, payload."""
    n, width = payload.shape
    head = 2 if framed else 0
    full = head + 1 + width
    data = np.empty((n, full), dtype=np.uint8)
    if framed:
        data[:, 0] = _TAG_BYTES
        data[:, 1] = 1 + width
    data[:, head] = tag
    data[:, head + 1 :] = payload
    if valid is None:
        return [Block(data)], np.full(n, full, dtype=np.int64)
    if framed:
        data[~valid, 1] = 0  # a null is an empty Value: tag, zero length
    lens = np.where(valid, full, head)
    return [Block(data, lens)], lens


def _framed(blocks: list[Block], value_len: np.ndarray, framed: bool) -> tuple[list[Block], Any]:
    """Blocks of variable-length Values, framed as RepeatedValue entries when asked."""
    if not framed:
        return blocks, value_len
    n = len(value_len)
    frame_len = 1 + varint_sizes(value_len.view(np.uint64)) + value_len
    return [constant(bytes([_TAG_BYTES]), n), varint_block(value_len.view(np.uint64)), *blocks], (
        frame_len
    )


def value_blocks(
    column: pa.Array, value_type: ValueType, *, framed: bool = False
) -> tuple[list[Block], np.ndarray]:
    """Blocks writing each row's `Value` of one feature column.

    A null (or NaN, as Feast's converter reads it) is an empty Value. Types outside the fast
    set go through Feast's own converter one value at a time, so every type Feast supports
    still round-trips, only slower.

    Args:
        column: The feature column.
        value_type: Its Feast value type.
        framed: Write each Value as one entry of `RepeatedValue.val` (tag and length first).

    Returns:
        The blocks, and how many bytes they write per row (int64).
    """
    n = len(column)
    try:
        if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
            wide = value_type == ValueType.DOUBLE
            values = _numeric(
                column, pa.float64() if wide else pa.float32(), "<f8" if wide else "<f4"
            )
            nan = np.isnan(values)
            valid = _validity(column)
            if nan.any():
                valid = ~nan if valid is None else valid & ~nan
            payload = values.view(np.uint8).reshape(n, 8 if wide else 4)
            return _fixed(_TAG_DOUBLE if wide else _TAG_FLOAT, payload, valid, framed)
        if value_type == ValueType.BOOL:
            flags = column.cast(pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False)
            payload = flags.astype(np.uint8).reshape(n, 1)
            return _fixed(_TAG_BOOL, payload, _validity(column), framed)
        if value_type in (ValueType.INT64, ValueType.INT32):
            wide = value_type == ValueType.INT64
            ints = _numeric(column, pa.int64() if wide else pa.int32(), "<i8" if wide else "<i4")
            valid = _validity(column)
            # A negative int32 is sign-extended to 64 bits on the wire, as protobuf does.
            varints = varint_block(ints.astype(np.int64).view(np.uint64), valid)
            sizes = (
                varints.lens
                if varints.lens is not None
                else np.full(n, varints.data.shape[1], dtype=np.int64)
            )
            head = 2 if framed else 0
            lead = np.empty((n, head + 1), dtype=np.uint8)
            if framed:
                lead[:, 0] = _TAG_BYTES
                lead[:, 1] = 1 + sizes
            lead[:, head] = _TAG_INT64 if wide else _TAG_INT32
            if valid is None:
                return [Block(lead), varints], head + 1 + sizes
            if framed:
                lead[~valid, 1] = 0
            lead_lens = np.where(valid, head + 1, head)
            return [Block(lead, lead_lens), varints], lead_lens + sizes
        if value_type in (ValueType.STRING, ValueType.BYTES):
            text = value_type == ValueType.STRING
            offsets, data = binary_buffers(column, pa.large_string() if text else pa.large_binary())
            valid = _validity(column)
            lengths = np.diff(offsets)
            if valid is not None:
                lengths = np.where(valid, lengths, 0)
            length_block = varint_block(lengths.view(np.uint64), valid)
            value_len = 1 + varint_sizes(lengths.view(np.uint64)) + lengths
            if valid is not None:
                value_len = np.where(valid, value_len, 0)
            blocks = [
                constant(bytes([_TAG_STRING if text else _TAG_BYTES]), n, valid),
                length_block,
                padded_block(offsets, data, valid),
            ]
            return _framed(blocks, value_len, framed)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        log.debug("%s does not cast to %s; using Feast's converter", column.type, value_type)
    return _converted(column, value_type, framed)


def _converted(
    column: pa.Array, value_type: ValueType, framed: bool
) -> tuple[list[Block], np.ndarray]:
    """Values serialized by Feast's converter, as the stock materialisation does."""
    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    serialized = pa.array([p.SerializeToString() for p in protos], pa.large_binary())
    offsets, data = binary_buffers(serialized, pa.large_binary())
    return _framed([padded_block(offsets, data)], np.diff(offsets), framed)


def _longest(column: pa.Array, value_type: ValueType) -> int:
    """Bytes of the longest value of a string/bytes column (as it will be encoded)."""
    binary = pa.large_string() if value_type == ValueType.STRING else pa.large_binary()
    try:
        longest = pc.max(pc.binary_length(column.cast(binary))).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _CONVERTED_WIDTH_GUESS
    return longest or 0


def _row_width(columns: Sequence[pa.Array], value_types: Sequence[ValueType]) -> int:
    """Upper bound of one row's padded width, to size chunks by `_BLOCK_BUDGET`."""
    width = 0
    for column, value_type in zip(columns, value_types, strict=True):
        if value_type in (ValueType.STRING, ValueType.BYTES):
            width += 22 + _longest(column, value_type)
        elif value_type in _FAST_VALUE_TYPES:
            width += 13
        else:
            width += _CONVERTED_WIDTH_GUESS
    return max(width, 1)


def encode_values(columns: Sequence[pa.Array], value_types: Sequence[ValueType]) -> pa.Array:
    """Serialize each row's features as one `RepeatedValue` (one `Value` per column).

    Args:
        columns: Feature columns of equal length, in layout order.
        value_types: Feast value type of each column.

    Returns:
        A large_binary array: per row, the bytes `RepeatedValue(val=[...]).SerializeToString()`
        gives.
    """
    n = len(columns[0]) if columns else 0
    step = max(1024, _BLOCK_BUDGET // _row_width(columns, value_types))
    pieces = []
    for start in range(0, n, step):
        blocks: list[Block] = []
        for column, value_type in zip(columns, value_types, strict=True):
            blocks += value_blocks(column.slice(start, step), value_type, framed=True)[0]
        pieces.append(binary_array(*compact(blocks, min(step, n - start))))
    if not pieces:
        return pa.array([], pa.large_binary())
    return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)


def encode_entity_keys(columns: dict[str, pa.Array], types: dict[str, ValueType]) -> pa.Array:
    """Feast's `serialize_entity_key` (version 3) for every row, as a large_binary array.

    Args:
        columns: Join-key columns by join-key name.
        types: Feast value type of each join key (string, bytes, int64 or int32).

    Raises:
        ValueError: A join key has missing values.
    """
    names = sorted(columns)
    header = [struct.pack("<I", len(names))]
    for name in names:
        encoded = name.encode("utf8")
        header += [struct.pack("<II", ValueTypeProto.STRING, len(encoded)), encoded]
    width = len(b"".join(header))
    for name in names:
        if columns[name].null_count:
            raise ValueError(f"join key {name!r} has {columns[name].null_count} missing values")
        if types[name] in (ValueType.STRING, ValueType.BYTES):
            width += 8 + _longest(columns[name], types[name])
        else:
            width += 16
    n = len(columns[names[0]])
    step = max(1024, _BLOCK_BUDGET // width)
    pieces = []
    for start in range(0, n, step):
        rows = min(step, n - start)
        blocks = [constant(b"".join(header), rows)]
        for name in names:
            column, value_type = columns[name].slice(start, step), types[name]
            proto_type = _ENTITY_KEY_TYPES[value_type]
            if value_type in (ValueType.STRING, ValueType.BYTES):
                binary = pa.large_string() if value_type == ValueType.STRING else pa.large_binary()
                offsets, data = binary_buffers(column, binary)
                sizes = np.diff(offsets).astype("<u4").view(np.uint8).reshape(rows, 4)
                blocks += [
                    constant(struct.pack("<I", proto_type), rows),
                    Block(sizes),
                    padded_block(offsets, data),
                ]
            else:
                wide = value_type == ValueType.INT64
                ints = _numeric(
                    column, pa.int64() if wide else pa.int32(), "<i8" if wide else "<i4"
                )
                size = 8 if wide else 4
                blocks += [
                    constant(struct.pack("<II", proto_type, size), rows),
                    Block(ints.view(np.uint8).reshape(rows, size)),
                ]
        pieces.append(binary_array(*compact(blocks, rows)))
    if not pieces:
        return pa.array([], pa.large_binary())
    return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)


def timestamps_us(column: pa.Array) -> pa.Array:
    """Microseconds since the epoch (UTC) as int64; a naive timestamp is read as UTC."""
    if pa.types.is_timestamp(column.type):
        return pc.cast(column, pa.timestamp("us", tz=column.type.tz), safe=False).cast(pa.int64())
    if pa.types.is_date(column.type):
        return column.cast(pa.timestamp("us")).cast(pa.int64())
    raise TypeError(f"expected a timestamp column, got {column.type}")


def latest_per_key(keys: pa.Array, event_us: pa.Array, created_us: pa.Array) -> pa.Array:
    """Indices of the winning row per key (newest event_ts, then created_ts), in key order."""
    # A missing created_ts ranks lowest, as in the upsert rule.
    created = created_us.fill_null(LOWEST_TS)
    frame = pa.table({"k": keys, "e": event_us, "c": created})
    order = pc.sort_indices(
        frame, sort_keys=[("k", "ascending"), ("e", "descending"), ("c", "descending")]
    )
    if len(order) < 2:
        return order
    sorted_keys = keys.take(order)
    first = pc.not_equal(sorted_keys.slice(1), sorted_keys.slice(0, len(sorted_keys) - 1))
    return order.filter(pa.concat_arrays([pa.array([True]), first]))


@dataclass(frozen=True)
class LatestRows:
    """What a bulk write of a table keeps: per entity its newest row, in entity key order."""

    keys: pa.Array
    """Serialized entity key (version 3) of every row of the table."""
    event_us: pa.Array
    """Event timestamp of every row, microseconds since the epoch (int64)."""
    created_us: pa.Array
    """Created timestamp of every row, microseconds since the epoch; null where absent."""
    order: pa.Array
    """Indices of the winning rows, sorted by entity key."""
    features: pa.Table
    """Every row's feature columns, in the view's feature order."""
    value_types: list[ValueType]
    """Feast value type of each feature column."""


def latest_rows(
    config: Any,
    feature_view: FeatureView,
    table: pa.Table,
    timestamp_field: str | None = None,
    created_timestamp_column: str | None = None,
) -> LatestRows | None:
    """Encode a table's entity keys and timestamps and pick the newest row per entity.

    Args:
        config: The repo config.
        feature_view: The view the rows belong to.
        table: Join-key columns, one column per feature (named as the view's features) and
            the event timestamp column; the created timestamp column if the source has one.
        timestamp_field: Event timestamp column; defaults to the batch source's.
        created_timestamp_column: Created timestamp column; defaults to the batch source's
            (none if the source has none).

    Returns:
        The rows to write, or None when the table is empty.

    Raises:
        ValueError: A join key or the event timestamp has missing values, a column is
            missing, or the config serializes entity keys in a version other than 3.
    """
    source = feature_view.batch_source
    ts_col = timestamp_field or (source.timestamp_field if source else None)
    created_col = created_timestamp_column
    if created_col is None and source is not None:
        created_col = source.created_timestamp_column or None
    if not ts_col:
        raise ValueError(f"no event timestamp column for feature view {feature_view.name}")
    join_types = {c.name: c.dtype.to_value_type() for c in feature_view.entity_columns}
    features = [(f.name, f.dtype.to_value_type()) for f in feature_view.features]
    needed = [*join_types, *(name for name, _ in features), ts_col]
    missing = [name for name in needed if name not in table.column_names]
    if missing:
        raise ValueError(f"{feature_view.name}: table lacks columns {missing}")
    if config.entity_key_serialization_version != 3:
        raise ValueError("write_arrow writes entity keys in serialization version 3 only")
    if not table.num_rows:
        return None
    keys = encode_entity_keys(
        {name: table.column(name).combine_chunks() for name in join_types}, join_types
    )
    event_us = timestamps_us(table.column(ts_col).combine_chunks())
    if event_us.null_count:
        raise ValueError(f"{feature_view.name}: {event_us.null_count} rows lack {ts_col}")
    if created_col and created_col in table.column_names:
        created_us = timestamps_us(table.column(created_col).combine_chunks())
    else:
        created_us = pa.nulls(table.num_rows, pa.int64())
    return LatestRows(
        keys=keys,
        event_us=event_us,
        created_us=created_us,
        order=latest_per_key(keys, event_us, created_us),
        features=table.select([name for name, _ in features]),
        value_types=[value_type for _, value_type in features],
    )


def prefetched(make: Callable[[int], _Chunk], starts: Iterable[int]) -> Iterator[_Chunk]:
    """Yield make(start) for each start, building the next chunk while the caller works.

    numpy and SQLite both release the GIL for their heavy loops, so encoding chunk k + 1 in
    a worker thread overlaps with SQLite inserting chunk k.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-encode") as pool:
        pending: Future[_Chunk] | None = None
        for start in starts:
            upcoming = pool.submit(make, start)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


def supports_bulk(feature_view: Any) -> bool:
    """Whether `write_arrow` can take this view's materialisation (else Feast's path does).

    Plain batch views only: no transformation, aggregation, upstream views or offline
    write-back, at least one join key, and join keys of a type written vectorised.
    """
    if not isinstance(feature_view, FeatureView) or feature_view.batch_source is None:
        return False
    if getattr(feature_view, "feature_transformation", None) is not None:
        return False
    if getattr(feature_view, "aggregations", None) or getattr(feature_view, "source_views", None):
        return False
    if getattr(feature_view, "offline", False) or not getattr(feature_view, "online", True):
        return False
    columns = feature_view.entity_columns
    return bool(columns) and all(c.dtype.to_value_type() in _ENTITY_KEY_TYPES for c in columns)
