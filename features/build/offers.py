"""Offer context: what a customer buys and returns per category, and what the current order
holds.

Candidate offers are categories, so affinity is keyed by (customer_id, category) and looked
up for each candidate; the customer's share of spend in a category is derived at decision
time from this view and the customer's total spend. Snapshots follow the customer view's
convention: a row at the whole second after each purchase or return, holding what happened
strictly before it, so a decision sees the purchases made earlier the same day.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.build.common import US_PER_S, codes_in, to_table, us
from features.build.snapshots import Events, SnapshotGrid


def _dictionary(values: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Integer codes of the values and the distinct values they index."""
    encoded = pc.dictionary_encode(values).combine_chunks()
    return np.asarray(encoded.indices, dtype=np.int64), encoded.dictionary


def customer_category_features(tables: dict[str, pa.Table]) -> pa.Table | None:
    """One row per (customer_id, category, event_ts): purchases and returns strictly before
    `event_ts`, a row at the second after each of them.

    A (customer, category) pair is one integer, customer code × categories + category code,
    so lines and returns are matched to pairs without building string keys.
    """
    items, products = tables.get("order_items"), tables.get("products")
    if items is None or products is None:
        return None
    orders = tables["orders"]
    order_customer, customer_ids = _dictionary(orders.column("customer_id"))
    product_category, categories = _dictionary(products.column("category"))
    n_categories = max(len(categories), 1)
    order_ts = us(orders.column("order_ts"))

    def pairs(order_ids: pa.ChunkedArray, product_ids: pa.ChunkedArray):
        order_row = codes_in(order_ids, orders.column("order_id"))
        product_row = codes_in(product_ids, products.column("product_id"))
        found = (order_row >= 0) & (product_row >= 0)
        order_row, product_row = np.maximum(order_row, 0), np.maximum(product_row, 0)
        code = order_customer[order_row] * n_categories + product_category[product_row]
        return np.where(found, code, -1), order_row, product_category[product_row]

    line_pair, line_order, line_category = pairs(
        items.column("order_id"), items.column("product_id")
    )
    line_ts = order_ts[line_order]
    spend = np.asarray(items.column("qty"), dtype=np.float64) * np.asarray(
        items.column("unit_price"), dtype=np.float64
    )
    purchases = Events.of(line_pair, line_ts, spend=spend)
    # An order with several products of one category is one order of that category.
    _, first_line = np.unique(line_order * n_categories + line_category, return_index=True)
    category_orders = Events.of(line_pair[first_line], line_ts[first_line])
    kinds = [(purchases, ())]
    returned = None
    returns = tables.get("returns")
    if returns is not None:
        return_pair, _, _ = pairs(returns.column("order_id"), returns.column("product_id"))
        returned = Events.of(return_pair, us(returns.column("requested_ts")))
        kinds.append((returned, ()))
    end_s = int(max(e.seen_s().max(initial=0) for e, _ in kinds))
    grid = SnapshotGrid.build([], kinds, end_s)

    out = {
        "customer_id": customer_ids.take(pa.array(grid.entity // n_categories)),
        "category": categories.take(pa.array(grid.entity % n_categories)),
        "event_ts": grid.ts_us,
        "category_orders_total": grid.count(category_orders),
        "category_spend_total": grid.total(purchases, purchases.values["spend"]),
        "category_last_purchase_epoch": grid.last(purchases, purchases.ts / US_PER_S),
        "category_returns_total": (
            grid.count(returned) if returned is not None else np.zeros(len(grid), np.int64)
        ),
    }
    return to_table(out)


def order_features(tables: dict[str, pa.Table]) -> pa.Table:
    """What each order holds and where its parcel is: a row at the order, another at
    dispatch (the promise becomes known) and another at delivery."""
    contents = order_contents(tables)
    n = contents.num_rows
    contents = contents.append_column(
        "order_promised_epoch", pa.nulls(n, pa.float64())
    ).append_column("order_delivered_epoch", pa.nulls(n, pa.float64()))
    shipments = tables.get("shipments")
    if shipments is None or not shipments.num_rows:
        return contents
    # An order's parcel: its first shipment.
    ships = shipments.select(["order_id", "shipped_ts", "promised_ts", "delivered_ts"])
    ships = ships.sort_by([("order_id", "ascending"), ("shipped_ts", "ascending")])
    first = ships.group_by("order_id", use_threads=False).aggregate(
        [("shipped_ts", "first"), ("promised_ts", "first"), ("delivered_ts", "first")]
    )
    row = codes_in(first.column("order_id"), contents.column("order_id"))
    first = first.filter(pa.array(row >= 0))
    row = row[row >= 0]
    promised = _epoch(first.column("promised_ts_first"))
    delivered = _epoch(first.column("delivered_ts_first"))
    kept = [c for c in contents.column_names if c not in _PARCEL_COLUMNS]
    dispatched = contents.select(kept).take(pa.array(row))
    dispatched = dispatched.set_column(
        dispatched.column_names.index("event_ts"), "event_ts", first.column("shipped_ts_first")
    )
    dispatched = dispatched.append_column("order_promised_epoch", promised).append_column(
        "order_delivered_epoch", pa.nulls(len(row), pa.float64())
    )
    arrived = pc.is_valid(first.column("delivered_ts_first"))
    delivered_rows = dispatched.filter(arrived)
    delivered_rows = delivered_rows.set_column(
        delivered_rows.column_names.index("event_ts"),
        "event_ts",
        first.column("delivered_ts_first").filter(arrived),
    )
    delivered_rows = delivered_rows.set_column(
        delivered_rows.column_names.index("order_delivered_epoch"),
        "order_delivered_epoch",
        delivered.filter(arrived),
    )
    out = pa.concat_tables([contents, dispatched, delivered_rows])
    return out.sort_by([("order_id", "ascending"), ("event_ts", "ascending")])


_PARCEL_COLUMNS = ("order_promised_epoch", "order_delivered_epoch")


def _epoch(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps as float epoch seconds (nulls kept)."""
    micros = pc.cast(column.cast(pa.timestamp("us", tz="UTC")), pa.int64())
    return pc.divide(pc.cast(micros, pa.float64()), 1e6)


def order_contents(tables: dict[str, pa.Table]) -> pa.Table:
    """One row per order, stamped at the order: who placed it and what it holds."""
    orders = tables["orders"]
    base = pa.table(
        {
            "order_id": orders.column("order_id"),
            "event_ts": orders.column("order_ts"),
            "order_customer_id": orders.column("customer_id"),
            "order_total": orders.column("amount"),
        }
    )
    items, products = tables.get("order_items"), tables.get("products")
    if items is None or products is None:
        return base
    lines = items.join(products.select(["product_id", "category"]), "product_id")
    lines = lines.append_column(
        "spend", pc.multiply(lines.column("qty").cast(pa.float64()), lines.column("unit_price"))
    )
    per_category = lines.group_by(["order_id", "category"]).aggregate(
        [("spend", "sum"), ("qty", "sum")]
    )
    # Sorted by order, then by spend descending: the first category of an order is its main.
    per_category = per_category.sort_by(
        [("order_id", "ascending"), ("spend_sum", "descending"), ("category", "ascending")]
    )
    main = per_category.group_by("order_id", use_threads=False).aggregate([("category", "first")])
    by_name = per_category.sort_by([("order_id", "ascending"), ("category", "ascending")])
    summary = by_name.group_by("order_id", use_threads=False).aggregate(
        [("qty_sum", "sum"), ("category", "count"), ("category", "list")]
    )
    summary = pa.table(
        {
            "order_id": summary.column("order_id"),
            "order_items": summary.column("qty_sum_sum"),
            "order_n_categories": summary.column("category_count"),
            "order_categories": pc.binary_join(summary.column("category_list"), "|"),
        }
    ).join(main.rename_columns(["order_id", "order_main_category"]), "order_id")
    return base.join(summary, "order_id", join_type="left outer").sort_by("order_id")
