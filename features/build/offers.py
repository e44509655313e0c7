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

from features.build.asof import EventIndex
from features.build.common import US_PER_DAY, epoch_s, frame, is_missing_us, next_midnight_us, us


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


def customer_category_features(tables: dict[str, pa.Table]) -> pd.DataFrame | None:
    """One row per (customer_id, category, event_ts): purchases and returns so far."""
    lines = _order_lines(tables)
    if lines is None:
        return None
    products = frame(tables, "products", ["product_id", "category"])
    returns = frame(tables, "returns", ["order_id", "product_id", "requested_ts"])
    orders = frame(tables, "orders", ["order_id", "customer_id"])
    if returns is not None:
        returns = returns.merge(products, on="product_id").merge(orders, on="order_id")
    pairs = [lines[["customer_id", "category"]]]
    if returns is not None:
        pairs.append(returns[["customer_id", "category"]])
    pair_index = pd.MultiIndex.from_frame(pd.concat(pairs).drop_duplicates())

    def codes(df: pd.DataFrame) -> np.ndarray:
        return pair_index.get_indexer(pd.MultiIndex.from_frame(df[["customer_id", "category"]]))

    line_code, line_ts = codes(lines), us(lines["order_ts"])
    # Each (customer, category) gets a row on the day after each purchase or return request.
    row_parts = [(line_code, next_midnight_us(line_ts))]
    if returns is not None:
        ret_code, ret_ts = codes(returns), us(returns["requested_ts"])
        keep = ~is_missing_us(ret_ts)
        ret_code, ret_ts = ret_code[keep], ret_ts[keep]
        row_parts.append((ret_code, next_midnight_us(ret_ts)))
    all_code = np.concatenate([c for c, _ in row_parts])
    all_day = np.concatenate([d // US_PER_DAY for _, d in row_parts])
    pair = np.unique(all_code.astype(np.int64) * (2**24) + all_day)
    row_code, row_ts = pair // (2**24), (pair % (2**24)) * US_PER_DAY

    purchases = EventIndex.build(line_code, line_ts)
    # An order with several products of one category is one order of that category.
    order_first = ~lines.duplicated(["order_id", "category"]).to_numpy()
    category_orders = EventIndex.build(line_code[order_first], line_ts[order_first])
    out = {
        "customer_id": pair_index.get_level_values(0).to_numpy(dtype=object)[row_code],
        "category": pair_index.get_level_values(1).to_numpy(dtype=object)[row_code],
        "event_ts": row_ts,
        "category_orders_total": category_orders.count(row_code, row_ts),
        "category_spend_total": purchases.total(lines["spend"].to_numpy(), row_code, row_ts),
        "category_last_purchase_epoch": epoch_s(
            purchases.last(line_ts, row_code, row_ts, fill=np.iinfo(np.int64).min)
        ),
    }
    if returns is not None:
        out["category_returns_total"] = EventIndex.build(ret_code, ret_ts).count(row_code, row_ts)
    else:
        out["category_returns_total"] = np.zeros(len(row_code), dtype=np.int64)
    result = pd.DataFrame(out)
    result["event_ts"] = pd.to_datetime(result["event_ts"], unit="us", utc=True)
    return result


def order_features(tables: dict[str, pa.Table]) -> pd.DataFrame:
    """One row per order, stamped at the order: what it holds."""
    orders = frame(tables, "orders", ["order_id", "order_ts", "amount"])
    out = pd.DataFrame(
        {
            "order_id": orders["order_id"],
            "event_ts": orders["order_ts"],
            "order_total": orders["amount"],
        }
    )
    lines = _order_lines(tables)
    if lines is None:
        for column in ("order_items", "order_categories", "order_main_category"):
            out[column] = None
        out["order_n_categories"] = np.nan
        return out
    per_category = lines.groupby(["order_id", "category"], sort=True, as_index=False).agg(
        spend=("spend", "sum"), qty=("qty", "sum")
    )
    main = per_category.sort_values(["order_id", "spend"], ascending=[True, False])
    main = main.drop_duplicates("order_id").set_index("order_id")["category"]
    summary = per_category.groupby("order_id").agg(
        order_items=("qty", "sum"),
        order_n_categories=("category", "size"),
        order_categories=("category", "|".join),
    )
    summary["order_main_category"] = main
    return out.merge(summary, left_on="order_id", right_index=True, how="left")
