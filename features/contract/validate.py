"""Check a folder of raw tables against the contract.

Checks run column by column with Arrow compute kernels (no Python loop over rows), so a
folder of tens of millions of rows validates in seconds. Every problem becomes a `Violation`
naming the table, column, rule, count and the keys of the first offending rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from zoneinfo import available_timezones

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract.io import find_table_file, read_table
from features.contract.schema import CONTRACT, TableSchema
from features.contract.violations import ValidationReport, Violation, violation

log = logging.getLogger(__name__)


def usable(schema: TableSchema, table: pa.Table, name: str) -> bool:
    """Whether a rule can read a column: declared, present once, and of its contract type.

    Reading reports a column that is missing or does not parse and leaves it out of the
    typed table; every rule asks here first and skips what it cannot read, so one rule's
    missing input is never another rule's crash.
    """
    if name not in schema.column_names:
        return False
    indices = table.schema.get_all_field_indices(name)
    return (
        len(indices) == 1 and table.schema.field(indices[0]).type == schema.column(name).arrow_type
    )


def named_rows(schema: TableSchema, table: pa.Table) -> tuple[pa.Table, tuple[str, ...]]:
    """The table and the columns that name its rows in messages: its key, or the row
    number when a key column is unusable (reading has reported that already)."""
    if all(usable(schema, table, k) for k in schema.key):
        return table, schema.key
    return table.append_column("row", pa.array(np.arange(table.num_rows))), ("row",)


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def check_columns(schema: TableSchema, table: pa.Table) -> list[Violation]:
    """Per-column rules: required values, allowed values, ranges, patterns, time zones."""
    found: list[Violation | None] = []
    table, key = named_rows(schema, table)
    for column in schema.columns:
        if not usable(schema, table, column.name):
            continue
        values = table.column(column.name)
        name = column.name
        # A personal column's values stay out of messages, which end up in logs.
        shown = None if column.personal else values
        if not column.nullable and values.null_count:
            found.append(
                violation(schema.name, table, key, name, "are missing a value", pc.is_null(values))
            )
        other = column.required_without
        if other is not None and usable(schema, table, other):
            # Neither the value nor what could tell it: name the rows, never the other
            # column's values (a contact's text is personal).
            bad = pc.and_(pc.is_null(values), pc.is_null(table.column(other)))
            rule = f"are missing a value, with no {other} to infer it from"
            found.append(violation(schema.name, table, key, name, rule, bad))
        if column.allowed is not None:
            bad = pc.invert(pc.is_in(values, value_set=pa.array(column.allowed)))
            bad = pc.and_(bad, pc.is_valid(values))
            rule = f"have a value outside {{{', '.join(column.allowed)}}}"
            found.append(violation(schema.name, table, key, name, rule, bad, shown))
        if column.min is not None:
            bad = pc.less(values, pa.scalar(column.min).cast(values.type))
            rule = "are negative" if column.min == 0 else f"are below {_fmt(column.min)}"
            found.append(violation(schema.name, table, key, name, rule, bad, shown))
        if column.max is not None:
            bad = pc.greater(values, pa.scalar(column.max).cast(values.type))
            found.append(
                violation(
                    schema.name, table, key, name, f"are above {_fmt(column.max)}", bad, shown
                )
            )
        if column.kind == "float":
            found.append(
                violation(
                    schema.name,
                    table,
                    key,
                    name,
                    "are not a number (NaN)",
                    pc.is_nan(values),
                    shown,
                )
            )
        if column.pattern is not None:
            bad = pc.invert(pc.match_substring_regex(values, column.pattern))
            rule = f"do not match the pattern {column.pattern}"
            found.append(violation(schema.name, table, key, name, rule, bad, shown))
        if column.timezone:
            distinct = pc.unique(values).drop_null().to_pylist()
            unknown = sorted(set(distinct) - available_timezones())
            if unknown:
                bad = pc.is_in(values, value_set=pa.array(unknown, pa.string()))
                found.append(
                    violation(schema.name, table, key, name, "are not IANA time zones", bad, shown)
                )
    return [v for v in found if v is not None]


class _Screen:
    """Counts violations of the table-spanning rules with DuckDB, in parallel and without
    copying the Arrow tables; the slower Arrow path that names offending rows then runs
    only for rules that are actually broken."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        self.con = duckdb.connect()
        for name, table in tables.items():
            # DuckDB refuses a table without columns; no rule reads one anyway.
            if table.num_columns:
                self.con.register(name, table)

    def _count(self, sql: str) -> int:
        return int(self.con.sql(sql).fetchall()[0][0])

    def duplicated_keys(self, table: str, key: tuple[str, ...]) -> int:
        cols = ", ".join(f'"{k}"' for k in key)
        return self._count(
            f'SELECT count(*) FROM (SELECT 1 FROM "{table}" GROUP BY {cols} HAVING count(*) > 1)'
        )

    def unknown_references(self, table: str, column: str, target: str, key: str) -> int:
        return self._count(
            f'SELECT count(*) FROM "{table}" c WHERE c."{column}" IS NOT NULL AND NOT EXISTS '
            f'(SELECT 1 FROM "{target}" p WHERE p."{key}" = c."{column}")'
        )

    def earlier_than_referenced(
        self, table: str, column: str, target: str, key: str, mine: str, theirs: str
    ) -> int:
        return self._count(
            f'SELECT count(*) FROM "{table}" c JOIN "{target}" p ON p."{key}" = c."{column}" '
            f'WHERE c."{mine}" < p."{theirs}"'
        )

    def close(self) -> None:
        self.con.close()


def check_key(
    schema: TableSchema, table: pa.Table, screen: _Screen | None = None
) -> Violation | None:
    """The key columns identify each row once."""
    if not all(usable(schema, table, k) for k in schema.key):
        return None
    if screen is not None and not screen.duplicated_keys(schema.name, schema.key):
        return None
    if len(schema.key) == 1:
        keys = table.column(schema.key[0])
    else:
        parts = [table.column(k).cast(pa.string()) for k in schema.key]
        keys = pc.binary_join_element_wise(*parts, "\x1f")
    if pc.count_distinct(keys, mode="all").as_py() == len(keys):
        return None
    counts = pa.table({"k": keys}).group_by("k").aggregate([("k", "count")])
    repeated = counts.filter(pc.greater(counts.column("k_count"), 1)).column("k")
    mask = pc.is_in(keys, value_set=repeated.combine_chunks())
    return violation(
        schema.name, table, schema.key, "/".join(schema.key), "have a duplicated key", mask
    )


def check_orderings(schema: TableSchema, table: pa.Table) -> list[Violation]:
    """In-row time orders, e.g. delivered_ts not before shipped_ts."""
    found = []
    table, key = named_rows(schema, table)
    for rule in schema.orderings:
        if not (usable(schema, table, rule.later) and usable(schema, table, rule.earlier)):
            continue
        bad = pc.less(table.column(rule.later), table.column(rule.earlier))
        text = f"are earlier than {rule.earlier}"
        found.append(
            violation(schema.name, table, key, rule.later, text, bad, table.column(rule.later))
        )
    return [v for v in found if v is not None]


def check_references(
    schema: TableSchema,
    table: pa.Table,
    tables: dict[str, pa.Table],
    screen: _Screen | None = None,
) -> tuple[list[Violation], list[str]]:
    """Foreign keys resolve, and referenced rows are not later than the rows pointing at them."""
    found: list[Violation | None] = []
    notes = []
    table, key = named_rows(schema, table)
    for ref in schema.references:
        if not usable(schema, table, ref.column):
            continue
        target = tables.get(ref.table)
        if target is None:
            notes.append(f"{schema.name}.{ref.column}: not checked, {ref.table} is absent")
            continue
        target_schema = CONTRACT[ref.table]
        if not usable(target_schema, target, ref.target):
            notes.append(
                f"{schema.name}.{ref.column}: not checked, {ref.table}.{ref.target} is unusable"
            )
            continue
        timed = ref.not_before is not None and (
            usable(schema, table, ref.not_before[0])
            and usable(target_schema, target, ref.not_before[1])
        )
        if screen is not None:
            unknown_n = screen.unknown_references(schema.name, ref.column, ref.table, ref.target)
            early_n = 0
            if timed:
                early_n = screen.earlier_than_referenced(
                    schema.name, ref.column, ref.table, ref.target, *ref.not_before
                )
            if not unknown_n and not early_n:
                continue
        values = table.column(ref.column)
        position = pc.index_in(values, value_set=target.column(ref.target).combine_chunks())
        unknown = pc.and_(pc.is_valid(values), pc.is_null(position))
        rule = f"reference unknown {ref.table}"
        found.append(violation(schema.name, table, key, ref.column, rule, unknown))
        if not timed:
            continue
        mine, theirs = ref.not_before
        # `take` with null positions yields nulls, which the comparison then skips.
        their_ts = pc.take(target.column(theirs), position)
        early = pc.less(table.column(mine), their_ts)
        singular = ref.table.removesuffix("s")
        rule = f"are earlier than the {singular}'s {theirs}"
        found.append(violation(schema.name, table, key, mine, rule, early, table.column(mine)))
    return [v for v in found if v is not None], notes


def check_subjects(
    schema: TableSchema, table: pa.Table, tables: dict[str, pa.Table]
) -> tuple[list[Violation], list[str]]:
    """Polymorphic keys resolve in the table their row's kind names (outreach subjects).

    Per value of the deciding column: the key is present when that value names tables and
    exists in one of them, and missing when it names none. Values outside the declared set
    are the column rules' business and are skipped here, as are referenced tables whose key
    column is unusable (reading has reported it).
    """
    found: list[Violation | None] = []
    notes = []
    table, key = named_rows(schema, table)
    for ref in schema.subjects:
        if not (usable(schema, table, ref.column) and usable(schema, table, ref.by)):
            continue
        values = table.column(ref.column)
        kinds = table.column(ref.by)
        for kind, names in ref.tables.items():
            rows = pc.fill_null(pc.equal(kinds, kind), False)
            if not pc.any(rows).as_py():
                continue
            if not names:
                rule = f"have a subject although action {kind} takes none"
                bad = pc.and_(rows, pc.is_valid(values))
                found.append(violation(schema.name, table, key, ref.column, rule, bad, values))
                continue
            absent = [n for n in names if n not in tables]
            if not absent:
                # Only the named rows are looked at: a few rows of big tables in a day's check.
                named = _named(names, tables, values.filter(rows))
            if absent:
                notes.append(
                    f"{schema.name}.{ref.column} of {kind}: not checked, {', '.join(absent)} absent"
                )
                continue
            missing = pc.and_(rows, pc.is_null(values))
            rule = f"are missing a subject for action {kind}"
            found.append(violation(schema.name, table, key, ref.column, rule, missing))
            unkeyed = [n for n in names if not usable(CONTRACT[n], named[n], CONTRACT[n].key[0])]
            if unkeyed:
                keys = ", ".join(f"{n}.{CONTRACT[n].key[0]}" for n in unkeyed)
                notes.append(f"{schema.name}.{ref.column} of {kind}: not checked, {keys} unusable")
                continue
            known = [named[n].column(CONTRACT[n].key[0]).combine_chunks() for n in names]
            exists = pc.is_in(values, value_set=pa.concat_arrays(known))
            unknown = pc.and_(pc.and_(rows, pc.is_valid(values)), pc.invert(exists))
            rule = f"reference unknown {' or '.join(names)} for action {kind}"
            found.append(violation(schema.name, table, key, ref.column, rule, unknown, values))
            if ref.owner is None or not usable(schema, table, ref.owner):
                continue
            owners = subject_owners(names, named)
            if owners is None:
                notes.append(
                    f"{schema.name}.{ref.column} of {kind}: owner not checked, the "
                    "subjects' customers are unknown"
                )
                continue
            owned = pc.index_in(values, value_set=owners[0])
            # `take` with null positions yields nulls, so rows without a known subject (and
            # subject tables without rows) compare as null and are skipped.
            owner = pc.take(owners[1], owned)
            other = pc.and_(rows, pc.not_equal(owner, table.column(ref.owner)))
            rule = f"name a subject of another {ref.owner} for action {kind}"
            found.append(violation(schema.name, table, key, ref.column, rule, other, values))
    return [v for v in found if v is not None], notes


def _named(
    names: tuple[str, ...], tables: dict[str, pa.Table], values: pa.ChunkedArray
) -> dict[str, pa.Table]:
    """The rows of the named subject tables whose key is among `values`, and the orders
    they belong to: what `check_subjects` reads of them for those values. Tables whose
    key or order column is unusable are passed whole (the checks skip them)."""
    wanted = pc.unique(values.combine_chunks()).drop_null()
    named = {}
    for name in names:
        schema, table = CONTRACT[name], tables[name]
        key = schema.key[0]
        if not usable(schema, table, key):
            named[name] = table
            continue
        named[name] = table.filter(
            pc.is_in(table.column(key), value_set=wanted.cast(table.column(key).type))
        )
    orders = tables.get("orders")
    if orders is not None and usable(CONTRACT["orders"], orders, "order_id"):
        ordered = [wanted.cast(pa.string())]
        for table in named.values():
            if (
                "order_id" in table.column_names
                and table.schema.field("order_id").type == pa.string()
            ):
                ordered.append(table.column("order_id").combine_chunks())
        found = pc.unique(pa.concat_arrays(ordered))
        named["orders"] = orders.filter(pc.is_in(orders.column("order_id"), value_set=found))
    elif orders is not None:
        named["orders"] = orders
    return named


def subject_owners(
    names: tuple[str, ...], tables: dict[str, pa.Table]
) -> tuple[pa.Array, pa.Array] | None:
    """(subject keys, their customer ids) over the named tables: a table's own
    `customer_id`, or that of its `order_id` in `orders`; None when a table has neither.

    A missing or mistyped column is the reading step's violation; the owner check is then
    skipped rather than failing on a column that is not there.
    """
    orders = tables.get("orders")
    orders_usable = orders is not None and all(
        usable(CONTRACT["orders"], orders, c) for c in ("order_id", "customer_id")
    )
    keys, owners = [], []
    for name in names:
        schema, subject = CONTRACT[name], tables[name]
        key_name = schema.key[0]
        if not usable(schema, subject, key_name):
            return None
        key = subject.column(key_name).combine_chunks()
        if usable(schema, subject, "customer_id"):
            owner = subject.column("customer_id").combine_chunks()
        elif usable(schema, subject, "order_id") and orders_usable:
            at = pc.index_in(subject.column("order_id"), value_set=orders.column("order_id"))
            owner = pc.take(orders.column("customer_id"), at).combine_chunks()
        else:
            return None
        keys.append(key.cast(pa.string()))
        owners.append(owner.cast(pa.string()))
    return pa.concat_arrays(keys), pa.concat_arrays(owners)


def check_tables(tables: dict[str, pa.Table]) -> tuple[list[Violation], list[str]]:
    """Run every rule of the contract over typed tables.

    Args:
        tables: Contract tables by name, as reading left them: a column that was missing or
            did not parse is absent, and the rules skip what they cannot read.

    Returns:
        The violations found and notes on what could not be checked.
    """
    return check_focus(tables, tables)


def check_focus(
    focus: dict[str, pa.Table], tables: dict[str, pa.Table]
) -> tuple[list[Violation], list[str]]:
    """Run every rule of the contract over the rows of `focus`, each table's rows a subset
    of the same table in `tables`, which references are resolved in.

    Returns:
        The violations found at those rows and notes on what could not be checked.
    """
    found: list[Violation] = []
    notes: list[str] = []
    # The screen counts over whole registered tables: it serves where the focus is them.
    whole = all(focus[name] is tables.get(name) for name in focus)
    screen = _Screen(tables) if whole else None
    try:
        for name, table in focus.items():
            schema = CONTRACT[name]
            found.extend(check_columns(schema, table))
            duplicate = check_key(schema, table, screen)
            if duplicate is not None:
                found.append(duplicate)
            found.extend(check_orderings(schema, table))
            for problems, more_notes in (
                check_references(schema, table, tables, screen),
                check_subjects(schema, table, tables),
            ):
                found.extend(problems)
                notes.extend(more_notes)
    finally:
        if screen is not None:
            screen.close()
    return found, notes


def load_folder(folder: Path) -> tuple[dict[str, pa.Table], ValidationReport]:
    """Read and check every contract table found in a folder.

    Args:
        folder: Directory holding `<table>.parquet` or `<table>.csv` files.

    Returns:
        The typed tables that could be read (possibly with columns left out where values
        did not parse), and the report of every violation found.
    """
    report = ValidationReport(folder=str(folder))
    tables: dict[str, pa.Table] = {}
    if not folder.is_dir():
        report.violations.append(Violation("(folder)", None, f"{folder} is not a directory"))
        return tables, report
    known = {f"{name}{suffix}" for name in CONTRACT for suffix in (".parquet", ".csv")}
    for path in sorted(folder.iterdir()):
        # "_" marks the folder's own records (a batch manifest, version metadata).
        if path.is_file() and path.name not in known and not path.name.startswith((".", "_")):
            report.notes.append(f"ignored {path.name}: not a contract table")
    for name, schema in CONTRACT.items():
        path, problem = find_table_file(folder, name)
        if problem is not None:
            report.violations.append(problem)
            continue
        if path is None:
            if schema.required:
                report.violations.append(
                    Violation(name, None, f"required table is missing ({name}.parquet or .csv)")
                )
            else:
                report.notes.append(f"{name}: absent (optional)")
            continue
        result = read_table(path, schema)
        report.violations.extend(result.violations)
        report.notes.extend(result.notes)
        if result.table is None:
            continue
        tables[name] = result.table
        report.rows[name] = result.table.num_rows
    problems, notes = check_tables(tables)
    report.violations.extend(problems)
    report.notes.extend(notes)
    log.info(
        "validated %s: %d rows, %d violations", folder, report.total_rows, len(report.violations)
    )
    return tables, report


def validate_folder(folder: Path) -> ValidationReport:
    """Check a folder against the contract; see `load_folder`."""
    return load_folder(folder)[1]
