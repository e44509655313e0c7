"""A business cut down to some of its customers, following the contract's references.

Every table that belongs to a customer keeps the rows of the chosen customers: directly by
its reference to `customers` (orders, contacts, offers, outreach), or through the table it
references (an order line through its order, a shipment through its order, a scan through
its shipment). A table that belongs to no customer (the product catalogue) is kept whole.
What is computed per customer from such a cut (a parcel's lateness, a customer's churn
label, an offer's outcome) is what the whole business gives for those customers, at a cost
that grows with the cut, not with the business. Where such a computation also reads how far
the data reaches (the latest instant of a table), `with_latest` adds the customers whose
rows hold each table's latest instants, so the cut reaches as far as the whole.

The references are the contract's own (`features.contract.schema`); no library walks them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract.schema import CONTRACT

CUSTOMERS = "customers"
CUSTOMER_KEY = "customer_id"


def customer_ids(tables: Mapping[str, pa.Table]) -> pa.Array:
    """Every customer the tables name: the `customers` table's keys, else those of the
    tables that reference it (unique, in first-seen order)."""
    if CUSTOMERS in tables:
        return pc.unique(tables[CUSTOMERS].column(CUSTOMER_KEY).combine_chunks())
    named = [
        tables[name].column(ref.column).combine_chunks()
        for name, schema in CONTRACT.items()
        if name in tables
        for ref in schema.references
        if ref.table == CUSTOMERS
    ]
    if not named:
        return pa.array([], type=pa.string())
    return pc.unique(pa.chunked_array(named).combine_chunks())


def with_owners(names: Sequence[str]) -> list[str]:
    """`names` and every table they reference, directly or through others, in the
    contract's order: what must be read to tell whose each row is."""
    wanted = set(names)
    for name in reversed(list(CONTRACT)):
        if name in wanted:
            wanted |= {r.table for r in CONTRACT[name].references}
    return [n for n in CONTRACT if n in wanted] + [n for n in names if n not in CONTRACT]


def drawn_customers(ids: pa.Array, count: int, seed: int = 0) -> pa.Array:
    """At most `count` of `ids`, each drawn by a seeded hash of the id alone: the same
    customer is drawn whatever the others are, so a customer drawn one night is drawn the
    next while the business grows (unless `count` newer ids hash below it)."""
    if len(ids) <= count:
        return ids
    draws = pd.util.hash_pandas_object(
        pd.Series(ids.to_numpy(zero_copy_only=False).astype(str)),
        index=False,
        hash_key=format(seed % 16**16, "016x"),
    ).to_numpy()
    chosen = np.sort(np.argsort(draws, kind="stable")[:count])
    return ids.take(pa.array(chosen))


def of_customers(tables: Mapping[str, pa.Table], customers: pa.Array) -> dict[str, pa.Table]:
    """The tables cut to the rows of `customers` (see the module's docstring).

    Args:
        tables: Raw contract tables (any of them; others are returned as they are).
        customers: The customer ids to keep.

    Returns:
        The same table names; a customer-owned table with the rows of `customers` only.
    """
    kept: dict[str, pa.Table] = dict(tables)
    customers = customers.cast(pa.string())
    if CUSTOMERS in tables:
        table = tables[CUSTOMERS]
        kept[CUSTOMERS] = table.filter(pc.is_in(table.column(CUSTOMER_KEY), value_set=customers))
    # In the contract's order: a table's parent is cut before it.
    for name, (column, parent, target) in _owned(tables).items():
        values = (
            customers
            if parent == CUSTOMERS
            else pc.unique(kept[parent].column(target).combine_chunks())
        )
        kept[name] = tables[name].filter(pc.is_in(tables[name].column(column), value_set=values))
    return kept


def owned_keys(tables: Mapping[str, pa.Table]) -> dict[str, pa.Array]:
    """The keys of the customers and of each customer-owned table with a one-column key
    (customer_id, order_id, shipment_id, ...), each column's values unique: the entities
    whose rows the tables hold (of a cut, the chosen customers' own)."""
    names = [CUSTOMERS] if CUSTOMERS in tables else []
    names += [n for n in _owned(tables) if len(CONTRACT[n].key) == 1]
    return {
        CONTRACT[n].key[0]: pc.unique(tables[n].column(CONTRACT[n].key[0]).combine_chunks())
        for n in names
    }


def _owned(tables: Mapping[str, pa.Table]) -> dict[str, tuple[str, str, str]]:
    """Each customer-owned table present: (its column, the table it belongs through, that
    table's key), the first reference that leads to a customer."""
    owned: dict[str, tuple[str, str, str]] = {}
    for name, schema in CONTRACT.items():
        if name not in tables or name == CUSTOMERS:
            continue
        direct = [r for r in schema.references if r.table == CUSTOMERS]
        through = [r for r in schema.references if r.table in owned]
        ref = (direct or through or [None])[0]
        if ref is not None:
            owned[name] = (ref.column, ref.table, ref.target)
    return owned


def _owner(tables: Mapping[str, pa.Table], owned: dict, name: str, row: int):
    """The customer a row of a customer-owned table belongs to (None where a reference is
    missing)."""
    while True:
        column, parent, target = owned[name]
        value = tables[name].column(column)[row]
        if not value.is_valid:
            return None
        if parent == CUSTOMERS:
            return value.as_py()
        row = pc.index(tables[parent].column(target), value).as_py()
        if row < 0:
            return None
        name = parent


def with_latest(tables: Mapping[str, pa.Table], customers: pa.Array) -> pa.Array:
    """`customers` and the customer of each customer-owned table's latest instant in each
    of its instant columns, so that the cut (`of_customers`) reaches every column's latest
    instant as the whole does."""
    owned = _owned(tables)
    cut = of_customers(tables, customers)
    extra = []
    for name, table in tables.items():
        if name not in owned and name != CUSTOMERS:
            continue
        for field in table.schema:
            if not pa.types.is_timestamp(field.type):
                continue
            latest = pc.max(table.column(field.name))
            kept = pc.max(cut[name].column(field.name))
            if not latest.is_valid or (kept.is_valid and kept.as_py() >= latest.as_py()):
                continue
            row = pc.index(table.column(field.name), latest).as_py()
            if name == CUSTOMERS:
                extra.append(table.column(CUSTOMER_KEY)[row].as_py())
            else:
                extra.append(_owner(tables, owned, name, row))
    extra = [c for c in extra if c is not None]
    if not extra:
        return customers
    more = pa.array(extra, type=pa.string())
    return pc.unique(pa.concat_arrays([customers.cast(pa.string()), more]))
