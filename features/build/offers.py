"""Offer context: what a customer buys and returns per category, and what the current order
holds.

Candidate offers are categories, so affinity is keyed by (customer_id, category) and looked
up for each candidate; the customer's share of spend in a category is derived at decision
time from this view and the customer's total spend. Snapshots follow the customer view's
convention: stamped at the midnight after the change, from data strictly before it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.build.common import US_PER_S, frame, to_table, us
from features.build.snapshots import Events, SnapshotGrid


def _order_lines(tables: dict[str, pa.Table]) -> pd.DataFrame | None:
    """Order lines with customer, category, instant and spend; None without items/products."""
    items = frame(tables, "order_items")
    products = frame(tables, "products", ["product_id", "category"])
    if items is None or products is None:
        return None
    orders = frame(tables, "orders", ["order_id", "customer_id", "order_ts"])
    lines = items.merge(products, on="product_id", how="inner").merge(orders, on="order_id")
    lines["spend"] = lines["qty"] * lines["unit_price"]
    return lines


def customer_category_features(tables: dict[str, pa.Table]) -> pa.Table | None:
    """One row per (customer_id, category, event_ts): purchases and returns so far."""
    lines = _order_lines(tables)
    if lines is None:
        return None
    products = frame(tables, "products", ["product_id", "category"])
    returns = frame(tables, "returns", ["order_id", "product_id", "requested_ts"])
    if returns is not None:
        orders = frame(tables, "orders", ["order_id", "customer_id"])
        returns = returns.merge(products, on="product_id").merge(orders, on="order_id")
    pairs = [lines[["customer_id", "category"]]]
    if returns is not None:
        pairs.append(returns[["customer_id", "category"]])
    pair_index = pd.MultiIndex.from_frame(pd.concat(pairs).drop_duplicates())

    def codes(df: pd.DataFrame) -> np.ndarray:
        return pair_index.get_indexer(pd.MultiIndex.from_frame(df[["customer_id", "category"]]))

    line_code = codes(lines)
    purchases = Events.of(line_code, us(lines["order_ts"]), spend=lines["spend"].to_numpy())
    # An order with several products of one category is one order of that category.
    first_line = ~lines.duplicated(["order_id", "category"]).to_numpy()
    category_orders = Events.of(line_code[first_line], us(lines["order_ts"])[first_line])
    kinds = [(purchases, ())]
    returned = None
    if returns is not None:
        returned = Events.of(codes(returns), us(returns["requested_ts"]))
        kinds.append((returned, ()))
    end_day = int(max(e.days().max(initial=0) for e, _ in kinds))
    grid = SnapshotGrid.build([], kinds, end_day)

    out = {
        "customer_id": pair_index.get_level_values(0).to_numpy(dtype=object)[grid.entity],
        "category": pair_index.get_level_values(1).to_numpy(dtype=object)[grid.entity],
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
    """One row per order, stamped at the order: what it holds."""
    orders = tables["orders"]
    base = pa.table(
        {
            "order_id": orders.column("order_id"),
            "event_ts": orders.column("order_ts"),
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
