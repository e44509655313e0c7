"""What a contract check reports: one violation per (table, column, rule)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

EXAMPLES_SHOWN = 5


@dataclass(frozen=True)
class Violation:
    """Rows of one table that break one rule.

    Attributes:
        table: Table name.
        column: Column concerned, or None for a table-wide problem.
        rule: The rule broken, phrased to follow "N rows", e.g. "reference unknown customers".
        count: How many rows break it (0 for table-wide problems).
        key_name: Name of the key shown in examples, e.g. "order_id".
        examples: Keys of the first offending rows, possibly with the offending value.
    """

    table: str
    column: str | None
    rule: str
    count: int = 0
    key_name: str = ""
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        if not self.count:
            return f"{where}: {self.rule}"
        noun, rule = ("rows", self.rule) if self.count != 1 else ("row", _singular(self.rule))
        shown = ", ".join(self.examples)
        if self.count > len(self.examples):
            shown += ", …"
        suffix = f" ({self.key_name} {shown})" if self.examples else ""
        return f"{where}: {self.count} {noun} {rule}{suffix}"


_SINGULAR = {"are": "is", "have": "has", "do": "does", "reference": "references", "name": "names"}


def _singular(rule: str) -> str:
    """Rules are written after "N rows"; agree the first verb with "1 row"."""
    verb, _, rest = rule.partition(" ")
    return f"{_SINGULAR.get(verb, verb)} {rest}".rstrip()


@dataclass
class ValidationReport:
    """The outcome of checking a folder against the contract."""

    folder: str
    rows: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def row_keys(table: pa.Table, key: tuple[str, ...], mask: pa.ChunkedArray | pa.Array) -> list[str]:
    """Render the keys of the first offending rows selected by a boolean mask."""
    picked = table.select(list(key)).filter(mask).slice(0, EXAMPLES_SHOWN)
    columns = [picked.column(k).to_pylist() for k in key]
    rows = zip(*columns, strict=True)
    return ["/".join("∅" if v is None else str(v) for v in values) for values in rows]


def violation(
    table_name: str,
    table: pa.Table,
    key: tuple[str, ...],
    column: str,
    rule: str,
    mask: pa.ChunkedArray | pa.Array,
    values: pa.ChunkedArray | None = None,
) -> Violation | None:
    """Build a violation from a mask of offending rows, or None when no row offends.

    Args:
        table_name: Table name.
        table: The table (holds the key columns).
        key: Key columns used to name rows.
        column: Column concerned.
        rule: Rule text following "N rows".
        mask: True where a row breaks the rule (nulls count as not breaking it).
        values: When given, each example shows the offending value too.
    """
    mask = pc.fill_null(mask, False)
    count = pc.sum(mask).as_py() or 0
    if not count:
        return None
    keys = row_keys(table, key, mask)
    if values is not None:
        shown = values.filter(mask).slice(0, EXAMPLES_SHOWN).to_pylist()
        keys = [f"{k}={v!r}" for k, v in zip(keys, shown, strict=True)]
    return Violation(table_name, column, rule, count, "/".join(key), tuple(keys))
