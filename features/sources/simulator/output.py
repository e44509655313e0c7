"""Writing the simulated tables: global ids, exact schemas, Parquet or CSV, atomic folder."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.contract.schema import CONTRACT

Format = Literal["parquet", "csv"]

# Prefix of each entity's string ids ("c17", "o3", ...).
ID_PREFIX = {
    "customer": "c",
    "product": "p",
    "order": "o",
    "shipment": "s",
    "event": "ev",
    "return": "rt",
    "contact": "ct",
    "invoice": "in",
    "offer": "of",
    "outreach": "ou",
}
# The table whose rows define each entity's numbering (products are global, offset 0).
ENTITY_TABLE = {
    "customer": "customers",
    "order": "orders",
    "shipment": "shipments",
    "event": "tracking_events",
    "return": "returns",
    "contact": "contacts",
    "invoice": "invoices",
    "offer": "offers",
    "outreach": "outreach",
}
# Which columns of each table hold ids of which entity.
ID_COLUMNS: dict[str, dict[str, str]] = {
    "customers": {"customer_id": "customer"},
    "products": {"product_id": "product"},
    "orders": {"order_id": "order", "customer_id": "customer"},
    "order_items": {"order_id": "order", "product_id": "product"},
    "shipments": {"shipment_id": "shipment", "order_id": "order"},
    "tracking_events": {"event_id": "event", "shipment_id": "shipment"},
    "returns": {"return_id": "return", "order_id": "order", "product_id": "product"},
    "contacts": {"contact_id": "contact", "customer_id": "customer", "order_id": "order"},
    "invoices": {"invoice_id": "invoice", "customer_id": "customer", "order_id": "order"},
    "offers": {"offer_id": "offer", "customer_id": "customer", "order_id": "order"},
    "outreach": {"outreach_id": "outreach", "customer_id": "customer"},
    "_truth/shipments": {"shipment_id": "shipment"},
    "_truth/offers": {"offer_id": "offer"},
    "_truth/outreach": {"outreach_id": "outreach"},
    "_truth/customer_snapshots": {"customer_id": "customer"},
    "_truth/customer_latent": {"customer_id": "customer"},
}

# Polymorphic id columns: the chunk tables carry one chunk-local id column per entity the key
# may name ("subject_id:shipment", ...), at most one of them set per row.
SUBJECT_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "outreach": {"subject_id": ("shipment", "contact", "invoice", "order")},
}

_F = pa.float64()
_TS = pa.timestamp("us", tz="UTC")


def truth_schemas(category_names: tuple[str, ...]) -> dict[str, pa.Schema]:
    """Schemas of the `_truth/` tables (never read by models)."""
    latent = [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("order_rate", _F, nullable=False),
        pa.field("churn_base_logit", _F, nullable=False),
        pa.field("loyalty", _F, nullable=False),
        pa.field("price_sensitivity", _F, nullable=False),
        pa.field("payment_reliability", _F, nullable=False),
        pa.field("consent_openness", _F, nullable=False),
        pa.field("is_member", pa.bool_(), nullable=False),
        # Drawn by the outreach stream; missing when outreach is switched off.
        pa.field("delay_sensitivity", _F, nullable=True),
    ] + [pa.field(f"affinity_{name}", _F, nullable=False) for name in category_names]
    return {
        "_truth/shipments": pa.schema(
            [
                pa.field("shipment_id", pa.string(), nullable=False),
                pa.field("p_late", _F, nullable=False),
                pa.field("transit_log_mu", _F, nullable=False),
                pa.field("transit_log_sigma", _F, nullable=False),
                pa.field("p_lost", _F, nullable=False),
            ]
        ),
        "_truth/offers": pa.schema(
            [
                pa.field("offer_id", pa.string(), nullable=False),
                pa.field("p_accept", _F, nullable=False),
                pa.field("p_anyway", _F, nullable=False),
                pa.field("reference_category", pa.string(), nullable=False),
            ]
        ),
        "_truth/outreach": pa.schema(
            [
                pa.field("outreach_id", pa.string(), nullable=False),
                pa.field("effect_repurchase_90d", _F, nullable=False),
                pa.field("p_repurchase_90d_treated", _F, nullable=False),
                pa.field("p_repurchase_90d_untreated", _F, nullable=False),
                pa.field("retention_gain", _F, nullable=False),
                pa.field("p_churn_untreated", _F, nullable=False),
                pa.field("clock_from_ts", _TS, nullable=False),
                pa.field("effect_order_status_contact", _F, nullable=True),
                pa.field("effect_days_to_pay", _F, nullable=True),
            ]
        ),
        "_truth/customer_snapshots": pa.schema(
            [
                pa.field("customer_id", pa.string(), nullable=False),
                pa.field("snapshot_ts", _TS, nullable=False),
                pa.field("p_repurchase_90d", _F, nullable=False),
            ]
        ),
        "_truth/customer_latent": pa.schema(latent),
    }


def all_schemas(category_names: tuple[str, ...]) -> dict[str, pa.Schema]:
    """Every table written: the contract tables, then the truth tables."""
    schemas = {name: table.source_schema for name, table in CONTRACT.items()}
    schemas.update(truth_schemas(category_names))
    return schemas


def string_ids(count: int, prefix: str, offset: int) -> pa.Array:
    """The ids "<prefix><offset + 1>" .. "<prefix><offset + count>"."""
    number = pa.array(np.arange(offset + 1, offset + count + 1, dtype=np.int64))
    return pc.binary_join_element_wise(prefix, pc.cast(number, pa.string()), "")


def chunk_ids(
    tables: dict[str, pa.Table], offsets: dict[str, int], products: pa.Array
) -> dict[str, pa.Array]:
    """Global string ids of every entity numbered in this chunk, by chunk-local number."""
    ids = {"product": products}
    for entity, table in ENTITY_TABLE.items():
        ids[entity] = string_ids(tables[table].num_rows, ID_PREFIX[entity], offsets[entity])
    return ids


def globalise(name: str, table: pa.Table, ids: dict[str, pa.Array], schema: pa.Schema) -> pa.Table:
    """Replace chunk-local id numbers by global string ids and apply the exact schema.

    Each entity's ids are built once per chunk (`chunk_ids`); id columns are a `take` from
    them, several times cheaper than formatting every value.
    """
    columns = []
    subjects = SUBJECT_COLUMNS.get(name, {})
    for field in schema:
        if field.name in subjects:
            parts = [
                ids[entity].take(table.column(f"{field.name}:{entity}").combine_chunks())
                for entity in subjects[field.name]
            ]
            columns.append(pc.coalesce(*parts))
            continue
        column = table.column(field.name).combine_chunks()
        entity = ID_COLUMNS[name].get(field.name)
        if entity is not None:
            column = ids[entity].take(column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


class TableWriters:
    """One incremental writer per table; each `write` call adds one row group (Parquet).

    Truth tables are always Parquet; contract tables are Parquet or CSV. CSV timestamps are
    ISO-8601 with offset ("2024-03-01T10:00:00+00:00"), nulls are empty fields.
    """

    def __init__(self, folder: Path, fmt: Format, schemas: dict[str, pa.Schema]) -> None:
        self.folder = folder
        self.fmt = fmt
        self.schemas = schemas
        self.rows = {name: 0 for name in schemas}
        self._writers: dict[str, pq.ParquetWriter | _CsvWriter] = {}

    def _path(self, name: str) -> Path:
        csv = self.fmt == "csv" and not name.startswith("_truth/")
        return self.folder / f"{name}.{'csv' if csv else 'parquet'}"

    def _writer(self, name: str) -> pq.ParquetWriter | _CsvWriter:
        if name not in self._writers:
            path = self._path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            schema = self.schemas[name]
            if path.suffix == ".csv":
                self._writers[name] = _CsvWriter(path, schema)
            else:
                # Dictionary-encode only the low-cardinality labels: trying it on ids, times
                # and measurements costs more than half the write time and saves nothing.
                ids = ID_COLUMNS[name].keys() | SUBJECT_COLUMNS.get(name, {}).keys()
                labels = [
                    f.name for f in schema if pa.types.is_string(f.type) and f.name not in ids
                ]
                self._writers[name] = pq.ParquetWriter(
                    path, schema, compression="snappy", use_dictionary=labels
                )
        return self._writers[name]

    def open_all(self) -> None:
        """Create every file now, so that tables with no rows still exist with a header."""
        for name in self.schemas:
            self._writer(name)

    def write(self, name: str, table: pa.Table) -> None:
        writer = self._writer(name)
        if table.num_rows == 0:
            return
        if isinstance(writer, _CsvWriter):
            writer.write_table(table)
        else:
            writer.write_table(table, row_group_size=table.num_rows)
        self.rows[name] += table.num_rows

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class _CsvWriter:
    """A CSV file with a plain header row (Arrow's own writer quotes the names)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._sink = pa.OSFile(str(path), "wb")
        self._sink.write((",".join(schema.names) + "\n").encode())
        # Unquoted values: every value is an id, label, number or timestamp; Arrow raises
        # rather than write a value that would need quotes.
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        self._writer = pacsv.CSVWriter(self._sink, _csv_schema(schema), write_options=options)

    def write_table(self, table: pa.Table) -> None:
        self._writer.write_table(_csv_table(table))

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [
            pa.field(f.name, pa.string(), f.nullable) if pa.types.is_timestamp(f.type) else f
            for f in schema
        ]
    )


def _csv_table(table: pa.Table) -> pa.Table:
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            seconds = column.cast(pa.timestamp("s", tz="UTC"))
            text = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%S")
            column = pc.binary_join_element_wise(text, "+00:00", "")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=_csv_schema(table.schema))


@contextmanager
def atomic_directory(out_dir: Path) -> Iterator[Path]:
    """Yield a hidden sibling folder to write into; swap it into place only on success.

    A crash (or any exception) leaves `out_dir` as it was and removes the temporary folder.
    On success an existing `out_dir` is renamed aside, the new folder renamed into place and
    the old one deleted, so readers never see a half-written folder.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{token}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        aside = out_dir.parent / f".{out_dir.name}.old-{token}"
        out_dir.rename(aside)
        tmp.rename(out_dir)
        shutil.rmtree(aside)
    else:
        tmp.rename(out_dir)
