"""Read contract tables from a folder of CSV or Parquet files into typed Arrow tables.

Reading never raises on bad content: every problem (unreadable file, wrong delimiter, missing
columns, values that do not parse as the declared type) becomes a `Violation`, and the column
concerned is left out of the typed table so later checks skip it instead of failing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.contract.schema import CONTRACT, Column, TableSchema
from features.contract.violations import Violation, violation

SUFFIXES = (".parquet", ".csv")
_AWARE_RE = r"(Z|z|[+-]\d{2}(:?\d{2})?)$"
_INT_RE = r"^\s*[+-]?\d+\s*$"
_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")
_DELIMITERS = (";", "\t", "|")
_INT64_MAX = 2**63 - 1
# How many microseconds one unit of a coarser timestamp holds.
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000}


@dataclass
class ReadResult:
    """A typed table (columns that failed to parse are left out) and what went wrong."""

    table: pa.Table | None
    path: Path | None
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_table_file(folder: Path, name: str) -> tuple[Path | None, Violation | None]:
    """Locate `<name>.parquet` or `<name>.csv` in a folder; both at once is ambiguous."""
    found = [folder / f"{name}{s}" for s in SUFFIXES if (folder / f"{name}{s}").is_file()]
    if len(found) > 1:
        names = " and ".join(p.name for p in found)
        return None, Violation(name, None, f"found both {names}; keep one")
    return (found[0] if found else None), None


def read_table(path: Path, schema: TableSchema) -> ReadResult:
    """Read one table file and coerce its columns to the contract's types."""
    raw, problem = _read_raw(path, schema)
    if problem is not None:
        return ReadResult(None, path, [problem])
    result = ReadResult(None, path)
    repeated = sorted({c for c in raw.column_names if raw.column_names.count(c) > 1})
    if repeated:
        # Which of two same-named columns holds the data is unknowable; reject the file.
        rule = f"has duplicated columns: {', '.join(repeated)} ({path.name})"
        return ReadResult(None, path, [Violation(schema.name, None, rule)])
    absent = [c for c in schema.columns if c.name not in raw.column_names]
    missing = [c.name for c in absent if not (c.optional or c.by_ingest)]
    if missing:
        result.violations.append(
            Violation(schema.name, None, f"missing columns: {', '.join(missing)} ({path.name})")
        )
    extra = [c for c in raw.column_names if c not in schema.column_names]
    if extra:
        result.notes.append(f"{schema.name}: ignored columns not in the contract: {extra}")
    key_missing = any(k in missing for k in schema.key)
    # Rows are named by their key in messages; without it, name them by line number.
    naming = raw if not key_missing else raw.append_column("row", pa.array(np.arange(raw.num_rows)))
    key = schema.key if not key_missing else ("row",)
    arrays, names = [], []
    for column in schema.columns:
        if column.name in missing:
            continue
        if column.name not in raw.column_names:
            arrays.append(absent_values(column, raw.num_rows))
            names.append(column.name)
            continue
        typed, problems = _coerce(raw.column(column.name), column, schema.name, naming, key)
        result.violations.extend(problems)
        if typed is not None:
            arrays.append(typed)
            names.append(column.name)
    result.table = pa.table(dict(zip(names, arrays, strict=True)))
    return result


def absent_values(column: Column, rows: int) -> pa.Array:
    """The values of an optional or ingest-filled column a file leaves out: false for a
    flag (nothing was inferred), missing for anything else."""
    if column.kind == "bool" and column.by_ingest:
        return pa.array(np.zeros(rows, dtype=bool))
    return pa.nulls(rows, column.arrow_type)


def _read_raw(path: Path, schema: TableSchema) -> tuple[pa.Table | None, Violation | None]:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path), None
        return _read_csv(path, schema)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, Violation(schema.name, None, f"cannot read {path.name}: {first_line}")


def _read_csv(path: Path, schema: TableSchema) -> tuple[pa.Table | None, Violation | None]:
    with path.open("rb") as fh:
        first_line = fh.readline()
    try:
        header = first_line.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError:
        return None, _not_utf8(path, schema)
    if "\x00" in header:
        # UTF-16 and other wide encodings put NUL bytes between the characters.
        return None, _not_utf8(path, schema)
    if not header:
        return None, Violation(schema.name, None, f"{path.name} is empty (no header row)")
    if "," not in header and len(schema.columns) > 1:
        found = [d for d in _DELIMITERS if d in header]
        if found:
            return None, Violation(
                schema.name,
                None,
                f"{path.name} is not comma-delimited: the header "
                f"{header[:60]!r} splits on {found[0]!r}; write it with ',' as the delimiter",
            )
    # Everything is read as text and parsed here, so a bad value is reported with its row key
    # instead of failing the whole file. The header is parsed as CSV so that quoted names,
    # as most writers emit them, get the text type too.
    names = [c.strip() for c in next(csv.reader([header]))]
    convert = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    try:
        table = pacsv.read_csv(path, convert_options=convert)
    except pa.ArrowInvalid as exc:
        message = str(exc).strip().splitlines()[0]
        if "UTF8" in message:
            return None, _not_utf8(path, schema)
        return None, Violation(schema.name, None, f"cannot parse {path.name}: {_row_free(path)}")
    return table.rename_columns([c.strip() for c in table.column_names]), None


def _row_free(path: Path) -> str:
    """What is wrong with a CSV file that does not parse, without quoting its rows: Arrow's
    message repeats the offending row, and rows hold personal values."""
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        rows = csv.reader(fh)
        width = len(next(rows, []))
        for row in rows:
            if row and len(row) != width:
                return f"line {rows.line_num} has {len(row)} fields where the header has {width}"
    return "its rows do not split into the header's columns"


def _not_utf8(path: Path, schema: TableSchema) -> Violation:
    return Violation(schema.name, None, f"{path.name} is not UTF-8 text; write it encoded as UTF-8")


def _coerce(
    values: pa.ChunkedArray,
    column: Column,
    table_name: str,
    naming: pa.Table,
    key: tuple[str, ...],
) -> tuple[pa.ChunkedArray | None, list[Violation]]:
    """Cast one column to its contract type; unparseable values become violations."""
    target = column.arrow_type
    # A personal column's values stay out of messages, which end up in logs.
    shown = None if column.personal else values
    if values.type == target:
        return values, []
    kind = column.kind
    is_text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    if pa.types.is_dictionary(values.type):
        return _coerce(values.cast(values.type.value_type), column, table_name, naming, key)
    if pa.types.is_null(values.type):
        # A column without a single value has no type of its own (pandas writes an all-None
        # column so); the not-null rule then names it where values are required.
        return values.cast(target), []
    if kind == "string":
        try:
            return values.cast(pa.string()), []
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # Nested values have no text form, and binary values may not be UTF-8.
            rule = f"has type {values.type} that cannot be read as text"
            return None, [Violation(table_name, column.name, rule)]
    if kind == "timestamp":
        if pa.types.is_timestamp(values.type):
            return _cast_timestamps(values, column, table_name, naming, key)
        if is_text:
            return _parse_timestamps(values, column, table_name, naming, key)
    if kind == "bool":
        if is_text:
            lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
            bad = pc.invert(pc.is_in(lowered, pa.array(_TRUE + _FALSE)))
            problem = violation(
                table_name, naming, key, column.name, "are not true/false", bad, shown
            )
            if problem:
                return None, [problem]
            return pc.is_in(lowered, pa.array(_TRUE)).cast(pa.bool_()), []
        if pa.types.is_integer(values.type):
            return pc.not_equal(values, 0), []
    if kind == "int":
        if is_text:
            bad = pc.invert(pc.match_substring_regex(values, _INT_RE))
            problem = violation(
                table_name, naming, key, column.name, "are not whole numbers", bad, shown
            )
            if problem:
                return None, [problem]
            # Through float first: digits beyond 64 bits are named, not a failed cast.
            bad = pc.greater_equal(pc.abs(pc.cast(values, pa.float64())), 2.0**63)
            problem = violation(table_name, naming, key, column.name, _OUT_OF_RANGE, bad, shown)
            if problem:
                return None, [problem]
            return pc.cast(pc.utf8_trim_whitespace(values), pa.int64()), []
        if pa.types.is_integer(values.type):
            if values.type == pa.uint64():
                bad = pc.greater(values, pa.scalar(_INT64_MAX, pa.uint64()))
                problem = violation(table_name, naming, key, column.name, _OUT_OF_RANGE, bad, shown)
                if problem:
                    return None, [problem]
            return values.cast(pa.int64()), []
        if pa.types.is_floating(values.type):
            bad = pc.not_equal(pc.floor(values), values)
            problem = violation(
                table_name, naming, key, column.name, "are not whole numbers", bad, shown
            )
            if problem:
                return None, [problem]
            bad = pc.greater_equal(pc.abs(values), 2.0**63)
            problem = violation(table_name, naming, key, column.name, _OUT_OF_RANGE, bad, shown)
            if problem:
                return None, [problem]
            return values.cast(pa.int64(), safe=False), []
    if kind == "float":
        if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
            return values.cast(pa.float64()), []
        if is_text:
            parsed = pd.to_numeric(values.to_pandas(), errors="coerce")
            numbers = pa.chunked_array([pa.array(parsed.to_numpy(), type=pa.float64())])
            bad = pc.and_(pc.is_valid(values), pc.is_nan(numbers))
            problem = violation(table_name, naming, key, column.name, "are not numbers", bad, shown)
            if problem:
                return None, [problem]
            return pc.if_else(pc.is_nan(numbers), pa.scalar(None, pa.float64()), numbers), []
    problem = Violation(table_name, column.name, f"has type {values.type}, expected {column.kind}")
    return None, [problem]


_OUT_OF_RANGE = "are whole numbers beyond the 64-bit range"


def _cast_timestamps(
    values: pa.ChunkedArray,
    column: Column,
    table_name: str,
    naming: pa.Table,
    key: tuple[str, ...],
) -> tuple[pa.ChunkedArray | None, list[Violation]]:
    """Typed timestamps to microseconds in UTC.

    Naive Parquet timestamps are read as UTC, the contract's storage zone. Nanoseconds are
    truncated to the contract's microseconds; seconds and milliseconds so far from 1970 that
    microseconds overflow are named.
    """
    if values.type.tz is None:
        values = pc.assume_timezone(values, "UTC")
    factor = _US_PER_UNIT.get(values.type.unit)
    if factor is not None:
        limit = _INT64_MAX // factor
        bad = pc.greater(pc.abs(values.cast(pa.int64())), limit)
        rule = "are timestamps beyond the representable range"
        # Without values: such instants have no Python datetime to show.
        problem = violation(table_name, naming, key, column.name, rule, bad)
        if problem:
            return None, [problem]
    return values.cast(column.arrow_type, safe=values.type.unit != "ns"), []


def _parse_timestamps(
    values: pa.ChunkedArray,
    column: Column,
    table_name: str,
    naming: pa.Table,
    key: tuple[str, ...],
) -> tuple[pa.ChunkedArray | None, list[Violation]]:
    trimmed = pc.utf8_trim_whitespace(values)
    text = trimmed.to_pandas()
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad_np = parsed.isna().to_numpy() & text.notna().to_numpy()
    if bad_np.any():
        # The ISO fast path gives up on a whole column for one odd row; retry leniently so only
        # the truly unparseable rows are reported.
        parsed = pd.to_datetime(text, format="mixed", utc=True, errors="coerce")
        bad_np = parsed.isna().to_numpy() & text.notna().to_numpy()
    problem = violation(
        table_name,
        naming,
        key,
        column.name,
        "have unparseable timestamps",
        pa.array(bad_np),
        None if column.personal else values,
    )
    if problem:
        return None, [problem]
    aware = pc.match_substring_regex(trimmed, _AWARE_RE)
    n_aware = pc.sum(aware).as_py() or 0
    n_valid = len(values) - values.null_count
    if 0 < n_aware < n_valid:
        # Mixed zones make instants ambiguous; name the minority so it is easy to find.
        naive = pc.invert(aware)
        minority, label = (naive, "naive") if n_aware * 2 >= n_valid else (aware, "aware")
        rule = f"are timezone-{label} while the rest of the column is not"
        shown = None if column.personal else values
        problem = violation(table_name, naming, key, column.name, rule, minority, shown)
        return None, [problem] if problem else []
    typed = pa.array(parsed.dt.as_unit("us"), type=column.arrow_type)
    return pa.chunked_array([typed]), []


def read_validated(
    folder: Path,
    tables: list[str] | None = None,
    columns: dict[str, list[str] | None] | None = None,
) -> dict[str, pa.Table]:
    """Read the typed Parquet tables of a folder that ingest already validated.

    Ingest publishes only folders that passed the contract, as Parquet in the contract's
    types; reading them back needs no second check.

    Args:
        folder: A published raw folder.
        tables: Tables to read (default: every contract table present).
        columns: Per table, the columns to read (default or None: all).
    """
    out = {}
    for name in tables or list(CONTRACT):
        schema = CONTRACT[name]
        path = folder / f"{name}.parquet"
        if not path.is_file():
            continue
        wanted = (columns or {}).get(name) or schema.column_names
        stored = set(pq.read_schema(path).names)
        fillable = {c.name for c in schema.columns if c.optional or c.by_ingest} - stored
        table = pq.read_table(path, columns=[c for c in wanted if c not in fillable])
        for column in wanted:
            if column in fillable:
                # Published before the column existed, or a source's folder: the optional
                # and ingest-filled columns it could leave out.
                table = table.append_column(
                    column, absent_values(schema.column(column), table.num_rows)
                )
        # Types as the contract declares them; nullability as stored, like any Parquet read.
        table = table.select(wanted)
        out[name] = table.cast(pa.schema([(c, schema.column(c).arrow_type) for c in wanted]))
    return out
