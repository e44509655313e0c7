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
import pyarrow as pa
import pyarrow.compute as pc

from features.contract.io import find_table_file, read_table
from features.contract.schema import CONTRACT, TableSchema
from features.contract.violations import ValidationReport, Violation, violation

log = logging.getLogger(__name__)


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def check_columns(schema: TableSchema, table: pa.Table) -> list[Violation]:
    """Per-column rules: required values, allowed values, ranges, patterns, time zones."""
    found: list[Violation | None] = []
    key = schema.key
    for column in schema.columns:
        if column.name not in table.column_names:
            continue
        values = table.column(column.name)
        name = column.name
        if not column.nullable and values.null_count:
            found.append(
                violation(schema.name, table, key, name, "are missing a value", pc.is_null(values))
            )
        if column.allowed is not None:
            bad = pc.invert(pc.is_in(values, value_set=pa.array(column.allowed)))
            bad = pc.and_(bad, pc.is_valid(values))
            rule = f"have a value outside {{{', '.join(column.allowed)}}}"
            found.append(violation(schema.name, table, key, name, rule, bad, values))
        if column.min is not None:
            bad = pc.less(values, pa.scalar(column.min).cast(values.type))
            rule = "are negative" if column.min == 0 else f"are below {_fmt(column.min)}"
            found.append(violation(schema.name, table, key, name, rule, bad, values))
        if column.max is not None:
            bad = pc.greater(values, pa.scalar(column.max).cast(values.type))
            found.append(
                violation(
                    schema.name, table, key, name, f"are above {_fmt(column.max)}", bad, values
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
                    values,
                )
            )
        if column.pattern is not None:
            bad = pc.invert(pc.match_substring_regex(values, column.pattern))
            rule = f"do not match the pattern {column.pattern}"
            found.append(violation(schema.name, table, key, name, rule, bad, values))
        if column.timezone:
            distinct = pc.unique(values).drop_null().to_pylist()
            unknown = sorted(set(distinct) - available_timezones())
            if unknown:
                bad = pc.is_in(values, value_set=pa.array(unknown, pa.string()))
                found.append(
                    violation(schema.name, table, key, name, "are not IANA time zones", bad, values)
                )
    return [v for v in found if v is not None]


class _Screen:
    """Counts violations of the table-spanning rules with DuckDB, in parallel and without
    copying the Arrow tables; the slower Arrow path that names offending rows then runs
    only for rules that are actually broken."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        self.con = duckdb.connect()
        for name, table in tables.items():
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
    if any(k not in table.column_names for k in schema.key):
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
    for rule in schema.orderings:
        if rule.later not in table.column_names or rule.earlier not in table.column_names:
            continue
        bad = pc.less(table.column(rule.later), table.column(rule.earlier))
        text = f"are earlier than {rule.earlier}"
        found.append(
            violation(
                schema.name, table, schema.key, rule.later, text, bad, table.column(rule.later)
            )
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
    for ref in schema.references:
        if ref.column not in table.column_names:
            continue
        target = tables.get(ref.table)
        if target is None or ref.target not in target.column_names:
            notes.append(f"{schema.name}.{ref.column}: not checked, {ref.table} is absent")
            continue
        if screen is not None:
            unknown_n = screen.unknown_references(schema.name, ref.column, ref.table, ref.target)
            early_n = 0
            if (
                ref.not_before is not None
                and ref.not_before[0] in table.column_names
                and (ref.not_before[1] in target.column_names)
            ):
                early_n = screen.earlier_than_referenced(
                    schema.name, ref.column, ref.table, ref.target, *ref.not_before
                )
            if not unknown_n and not early_n:
                continue
        values = table.column(ref.column)
        position = pc.index_in(values, value_set=target.column(ref.target).combine_chunks())
        unknown = pc.and_(pc.is_valid(values), pc.is_null(position))
        rule = f"reference unknown {ref.table}"
        found.append(violation(schema.name, table, schema.key, ref.column, rule, unknown))
        if ref.not_before is None:
            continue
        mine, theirs = ref.not_before
        if mine not in table.column_names or theirs not in target.column_names:
            continue
        # `take` with null positions yields nulls, which the comparison then skips.
        their_ts = pc.take(target.column(theirs), position)
        early = pc.less(table.column(mine), their_ts)
        singular = ref.table.removesuffix("s")
        rule = f"are earlier than the {singular}'s {theirs}"
        found.append(
            violation(schema.name, table, schema.key, mine, rule, early, table.column(mine))
        )
    return [v for v in found if v is not None], notes


def check_subjects(
    schema: TableSchema, table: pa.Table, tables: dict[str, pa.Table]
) -> tuple[list[Violation], list[str]]:
    """Polymorphic keys resolve in the table their row's kind names (outreach subjects).

    Per value of the deciding column: the key is present when that value names tables and
    exists in one of them, and missing when it names none. Values outside the declared set
    are the column rules' business and are skipped here.
    """
    found: list[Violation | None] = []
    notes = []
    for ref in schema.subjects:
        if ref.column not in table.column_names or ref.by not in table.column_names:
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
                found.append(
                    violation(schema.name, table, schema.key, ref.column, rule, bad, values)
                )
                continue
            absent = [n for n in names if n not in tables]
            if absent:
                notes.append(
                    f"{schema.name}.{ref.column} of {kind}: not checked, {', '.join(absent)} absent"
                )
                continue
            missing = pc.and_(rows, pc.is_null(values))
            rule = f"are missing a subject for action {kind}"
            found.append(violation(schema.name, table, schema.key, ref.column, rule, missing))
            known = [tables[n].column(CONTRACT[n].key[0]).combine_chunks() for n in names]
            exists = pc.is_in(values, value_set=pa.concat_arrays(known))
            unknown = pc.and_(pc.and_(rows, pc.is_valid(values)), pc.invert(exists))
            rule = f"reference unknown {' or '.join(names)} for action {kind}"
            found.append(
                violation(schema.name, table, schema.key, ref.column, rule, unknown, values)
            )
            if ref.owner is not None and ref.owner in table.column_names:
                owners = subject_owners(names, tables)
                if owners is None:
                    notes.append(
                        f"{schema.name}.{ref.column} of {kind}: owner not checked, the "
                        "subjects' customers are unknown"
                    )
                    continue
                owned = pc.index_in(values, value_set=owners[0])
                owner = pc.take(owners[1], pc.fill_null(owned, 0))
                other = pc.and_(
                    pc.and_(rows, pc.is_valid(owned)), pc.not_equal(owner, table.column(ref.owner))
                )
                rule = f"name a subject of another {ref.owner} for action {kind}"
                found.append(
                    violation(schema.name, table, schema.key, ref.column, rule, other, values)
                )
    return [v for v in found if v is not None], notes


def subject_owners(
    names: tuple[str, ...], tables: dict[str, pa.Table]
) -> tuple[pa.Array, pa.Array] | None:
    """(subject keys, their customer ids) over the named tables: a table's own
    `customer_id`, or that of its `order_id` in `orders`; None when a table has neither."""
    keys, owners = [], []
    for name in names:
        subject = tables[name]
        key = subject.column(CONTRACT[name].key[0]).combine_chunks()
        if "customer_id" in subject.column_names:
            owner = subject.column("customer_id").combine_chunks()
        elif "order_id" in subject.column_names and "orders" in tables:
            orders = tables["orders"]
            at = pc.index_in(subject.column("order_id"), value_set=orders.column("order_id"))
            owner = pc.take(orders.column("customer_id"), at).combine_chunks()
        else:
            return None
        keys.append(key.cast(pa.string()))
        owners.append(owner.cast(pa.string()))
    return pa.concat_arrays(keys), pa.concat_arrays(owners)


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
        if path.is_file() and path.name not in known and not path.name.startswith("."):
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
    screen = _Screen(tables)
    try:
        for name, table in tables.items():
            schema = CONTRACT[name]
            report.violations.extend(check_columns(schema, table))
            duplicate = check_key(schema, table, screen)
            if duplicate is not None:
                report.violations.append(duplicate)
            report.violations.extend(check_orderings(schema, table))
            problems, notes = check_references(schema, table, tables, screen)
            report.violations.extend(problems)
            report.notes.extend(notes)
            problems, notes = check_subjects(schema, table, tables)
            report.violations.extend(problems)
            report.notes.extend(notes)
    finally:
        screen.close()
    log.info(
        "validated %s: %d rows, %d violations", folder, report.total_rows, len(report.violations)
    )
    return tables, report


def validate_folder(folder: Path) -> ValidationReport:
    """Check a folder against the contract; see `load_folder`."""
    return load_folder(folder)[1]
