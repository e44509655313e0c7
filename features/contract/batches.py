"""Histories and day batches: raw tables as known at the end of a day, and their upserts.

The contract (`features.contract.schema`) says when a row comes into being (`created`) and
which columns are filled later (`updates`). From a complete history this module cuts the
history as known at the end of day D (`as_known_at`) and day D's batch (`day_batch`): the
rows that came into being on D, and every earlier row whose update fell on D, each as known
at the end of D. `upsert` applies a batch to the current tables by key; `batch_violations`
says where a batch does not follow from the current tables.

A folder written as a history or a day batch carries `_batch.json` (`Manifest`) naming its
day, so that ingest knows a day batch when it sees one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from features.contract.schema import CONTRACT, TableSchema
from features.contract.validate import check_focus, usable
from features.contract.violations import Violation, violation
from features.instants import SCHEDULED_COLUMNS

BATCH_FILE = "_batch.json"

BatchKind = Literal["history", "day"]


@dataclass(frozen=True)
class Manifest:
    """What a folder of contract tables is.

    Attributes:
        kind: "history": every table as known at the end of `day`; "day": `day`'s batch.
        day: The history's last day, or the batch's day (UTC).
    """

    kind: BatchKind
    day: date

    def write(self, folder: Path) -> None:
        text = json.dumps({"kind": self.kind, "day": self.day.isoformat()})
        (folder / BATCH_FILE).write_text(text + "\n")


def read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest, or None when it has none.

    Raises:
        ValueError: The manifest is not a JSON object with a known kind and an ISO day.
    """
    path = folder / BATCH_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        kind, day = record["kind"], date.fromisoformat(record["day"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a batch manifest: {exc}") from None
    if kind not in ("history", "day"):
        raise ValueError(f"{path} names an unknown kind {kind!r}: history or day")
    return Manifest(kind, day)


def day_start(day: date) -> datetime:
    """Midnight UTC at which `day` begins."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def day_end(day: date) -> datetime:
    """Midnight UTC after `day`: the first instant not known at the end of `day`."""
    return day_start(day) + timedelta(days=1)


def creation_instants(name: str, tables: dict[str, pa.Table]) -> pa.ChunkedArray | None:
    """When each row of a table came into being, or None for a table of the history.

    A table without its own `created` column takes the instant of the row its first
    reference names (an order line: its order's `order_ts`; null when that row is unknown).
    """
    schema = CONTRACT[name]
    table = tables[name]
    if schema.created is not None:
        return table.column(schema.created)
    if not schema.references:
        return None
    reference = schema.references[0]
    parent = tables.get(reference.table)
    if parent is None:
        return None
    parent_created = creation_instants(reference.table, tables)
    if parent_created is None:
        return None
    position = pc.index_in(
        table.column(reference.column), value_set=parent.column(reference.target).combine_chunks()
    )
    return pa.chunked_array([pc.take(parent_created.combine_chunks(), position)])


def _instant_name(schema: TableSchema) -> str:
    if schema.created is not None:
        return schema.created
    reference = schema.references[0]
    return f"{reference.table.removesuffix('s')}'s {CONTRACT[reference.table].created}"


def as_known_at(tables: dict[str, pa.Table], day: date) -> dict[str, pa.Table]:
    """The history as known at the end of `day`: rows that came into being by then, with
    updates that happened later unfilled."""
    end = pa.scalar(day_end(day), pa.timestamp("us", tz="UTC"))
    out = {}
    for name, table in tables.items():
        schema = CONTRACT[name]
        created = creation_instants(name, tables)
        if created is not None:
            table = table.filter(pc.fill_null(pc.less(created, end), False))
        if schema.updates:
            instant = table.column(schema.updates[0])
            unknown = pc.fill_null(pc.greater_equal(instant, end), False)
            for column in schema.updates:
                index = table.schema.get_field_index(column)
                values = table.column(column)
                empty = pa.nulls(len(table), values.type)
                table = table.set_column(
                    index, table.field(column), pc.if_else(unknown, empty, values)
                )
        out[name] = table
    return out


def day_batch(tables: dict[str, pa.Table], day: date) -> dict[str, pa.Table]:
    """Day `day`'s batch of a complete history: rows that came into being on `day` and
    earlier rows updated on `day`, each as known at the end of `day`.

    Tables of the history (the catalogue) have no rows in a day batch.
    """
    known = as_known_at(tables, day)
    start = pa.scalar(day_start(day), pa.timestamp("us", tz="UTC"))
    out = {}
    for name, table in known.items():
        schema = CONTRACT[name]
        created = creation_instants(name, known)
        if created is None:
            out[name] = table.slice(0, 0)
            continue
        # As known at the end of the day, nothing is later than its end.
        today = pc.greater_equal(created, start)
        if schema.updates:
            updated = pc.greater_equal(table.column(schema.updates[0]), start)
            today = pc.or_(today, pc.fill_null(updated, False))
        out[name] = table.filter(pc.fill_null(today, False))
    return out


def row_keys(schema: TableSchema, table: pa.Table) -> pa.Array:
    """One value per row naming its key (several key columns joined)."""
    if len(schema.key) == 1:
        return table.column(schema.key[0]).combine_chunks()
    parts = [table.column(k).combine_chunks().cast(pa.string()) for k in schema.key]
    return pc.binary_join_element_wise(*parts, "\x1f")


def upsert(current: dict[str, pa.Table], batch: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """The current tables with a batch applied: a batch row replaces the current row of
    the same key, other batch rows are added."""
    out = {}
    for name, schema in CONTRACT.items():
        if name not in current and name not in batch:
            continue
        if name not in batch:
            out[name] = current[name]
            continue
        added = batch[name].select(schema.column_names)
        if name not in current:
            out[name] = added
            continue
        kept = current[name].select(schema.column_names)
        replaced = pc.is_in(row_keys(schema, kept), value_set=row_keys(schema, added))
        kept = kept.filter(pc.invert(replaced))
        out[name] = pa.concat_tables([kept, added.cast(kept.schema)])
    return out


def _differs(old: pa.Array, new: pa.Array) -> pa.Array:
    """True where two aligned columns differ, a null and a value included."""
    equal = pc.equal(old, new)
    both_null = pc.and_(pc.is_null(old), pc.is_null(new))
    return pc.invert(pc.or_(pc.fill_null(equal, False), both_null))


def batch_violations(
    current: dict[str, pa.Table],
    batch: dict[str, pa.Table],
    day: date,
    combined: dict[str, pa.Table] | None = None,
) -> list[Violation]:
    """Where a day batch does not follow from the current tables.

    Rows new to the current tables must come into being on `day`; a re-sent row may change
    only its `updates` columns, and only to an update on `day`; nothing in the batch may
    have happened after `day`. `combined` is `upsert(current, batch)` where the caller has
    it already.
    """
    timestamp = pa.timestamp("us", tz="UTC")
    start = pa.scalar(day_start(day), timestamp)
    end = pa.scalar(day_end(day), timestamp)
    if combined is None:
        combined = upsert(current, batch)
    found: list[Violation | None] = []
    for name, table in batch.items():
        schema = CONTRACT[name]
        key = schema.key
        for column in schema.columns:
            if column.kind != "timestamp" or (name, column.name) in SCHEDULED_COLUMNS:
                continue
            late = pc.greater_equal(table.column(column.name), end)
            rule = f"are later than the end of {day}"
            found.append(violation(name, table, key, column.name, rule, late, None))
        existing = current.get(name)
        keys = row_keys(schema, table)
        position = (
            pc.index_in(keys, value_set=row_keys(schema, existing))
            if existing is not None
            else pa.nulls(len(keys), pa.int32())
        )
        new = pc.is_null(position)
        created = creation_instants(name, {**combined, name: table})
        if created is not None:
            early = pc.and_(new, pc.less(created, start))
            rule = f"are new but their {_instant_name(schema)} is before {day}"
            found.append(violation(name, table, key, schema.created or "", rule, early))
        if existing is None:
            continue
        resent = pc.is_valid(position)
        for column in schema.column_names:
            old = pc.take(existing.column(column).combine_chunks(), position)
            changed = pc.and_(resent, _differs(old, table.column(column).combine_chunks()))
            if column not in schema.updates:
                rule = f"are re-sent with a changed {column}; only updates may change"
                if schema.updates:
                    rule = f"{rule} ({', '.join(schema.updates)})"
                found.append(violation(name, table, key, column, rule, changed))
            elif column == schema.updates[0]:
                values = table.column(column)
                off_day = pc.invert(pc.fill_null(pc.greater_equal(values, start), False))
                rule = f"are updated with a {column} that is not on {day}"
                found.append(violation(name, table, key, column, rule, pc.and_(changed, off_day)))
    return [v for v in found if v is not None]


def check_upserted(
    combined: dict[str, pa.Table], batch: dict[str, pa.Table]
) -> tuple[list[Violation], list[str]]:
    """Every rule of the contract over the rows an upserted batch can have broken.

    `combined` is tables that passed every rule (`check_tables` found nothing) with `batch`
    upserted (`upsert`). An upsert replaces and adds rows and never removes a key, so a rule
    can break only at a row that involves a batch row:
    - the batch's own rows: every per-row rule, their references, and duplicated keys (with
      the replaced rows gone, only two batch rows can share a key);
    - rows that reference a batch row: the reference's time order, and a subject's owner.

    Those rows are checked against the whole combined tables, so the answer is what
    `check_tables(combined)` gives, at the cost of the batch and of a scan of the referring
    columns instead of every rule over every row.
    """
    focus = {name: _touched(name, table, combined, batch) for name, table in combined.items()}
    return check_focus(focus, combined)


def _touched(
    name: str, table: pa.Table, combined: dict[str, pa.Table], batch: dict[str, pa.Table]
) -> pa.Table:
    """The rows of one combined table that are a batch row or reference one."""
    schema = CONTRACT[name]
    masks = []
    if name in batch and batch[name].num_rows and all(usable(schema, table, k) for k in schema.key):
        masks.append(pc.is_in(row_keys(schema, table), value_set=row_keys(schema, batch[name])))
    for ref in schema.references:
        if ref.table in batch and usable(schema, table, ref.column):
            masks.append(_refers(table.column(ref.column), ref.table, batch))
    for ref in schema.subjects:
        if not usable(schema, table, ref.column):
            continue
        # Each subject table once, however many kinds of action name it.
        for subject in dict.fromkeys(n for names in ref.tables.values() for n in names):
            masks.append(_refers(table.column(ref.column), subject, batch))
            # A subject's owner may be its order's customer: the order may be the batch's.
            rows = combined.get(subject)
            if "orders" in batch and rows is not None and "order_id" in rows.column_names:
                ordered = _refers(rows.column("order_id"), "orders", batch)
                keys = rows.column(CONTRACT[subject].key[0]).filter(ordered)
                masks.append(pc.is_in(table.column(ref.column), value_set=keys.combine_chunks()))
    if not masks:
        return table.slice(0, 0)
    touched = masks[0]
    for mask in masks[1:]:
        touched = pc.or_(touched, mask)
    return table.filter(pc.fill_null(touched, False))


def _refers(values: pa.ChunkedArray, target: str, batch: dict[str, pa.Table]) -> pa.ChunkedArray:
    """Where `values` name a key of the batch's rows of `target` (all false without any)."""
    rows = batch.get(target)
    key = CONTRACT[target].key[0]
    if rows is None or key not in rows.column_names:
        return pc.is_in(values, value_set=pa.array([], values.type))
    return pc.is_in(values, value_set=rows.column(key).combine_chunks().cast(values.type))


def fingerprint(tables: dict[str, pa.Table]) -> str:
    """A digest of the tables' content (types as the contract declares them), whatever
    the file format they came in."""
    digest = hashlib.sha256()
    for name, schema in CONTRACT.items():
        if name not in tables:
            continue
        table = tables[name]
        # What the source sent: ingest's own columns are left out, and so is an optional
        # column without a value, as if the source had not sent it.
        sent = [
            c
            for c in schema.columns
            if not c.by_ingest
            and not (
                c.optional
                and (
                    c.name not in table.column_names
                    or table.column(c.name).null_count == table.num_rows
                )
            )
        ]
        types = pa.schema([(c.name, c.arrow_type) for c in sent])
        table = table.select(types.names).cast(types).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, types) as writer:
            writer.write_table(table)
        digest.update(name.encode())
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()
