"""Shipment features at dispatch and after each tracking event.

One row per shipment at `shipped_ts` and one per later scan before delivery (in_transit,
exception, out_for_delivery), stamped at the scan. A row describes what was known at its
instant: the booking, the scans up to and including that instant, and how the carrier and
the lane performed on parcels whose outcome was known by the start of the row's day.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.build.common import (
    US_PER_DAY,
    US_PER_S,
    codes_in,
    epoch_s,
    frame,
    is_missing_us,
    peak_season,
    to_table,
    us,
)
from features.contract.schema import TRACKING_EVENT_TYPES

WINDOWS_DAYS = (7, 28)
BACKLOG_DAYS = 30
# Scans that start a new prediction row; "dispatched" is the dispatch row itself and after
# "delivered" nothing is left to predict.
UPDATE_EVENTS = ("in_transit", "exception", "out_for_delivery")
_NONE = "none"
_DISPATCH = 0
_TYPES = pa.array(["dispatch", *TRACKING_EVENT_TYPES, _NONE])


def _code(event_type: str) -> int:
    return _TYPES.to_pylist().index(event_type)


def late_outcomes(shipments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """When each shipment's lateness became known, and whether it was late.

    An on-time parcel is known at delivery; a late one as soon as its promise passes
    undelivered. Parcels never delivered are late once the promise has passed.
    """
    promised = us(shipments["promised_ts"])
    delivered = us(shipments["delivered_ts"])
    undelivered = is_missing_us(delivered)
    late = undelivered | (delivered > promised)
    known = np.where(late, promised, delivered)
    return known, late


def _parcels(tables: dict[str, pa.Table], shipments: pd.DataFrame) -> pd.DataFrame:
    """Weight, item count and order facts per shipment, where the tables allow."""
    out = pd.DataFrame({"order_id": shipments["order_id"]})
    items = frame(tables, "order_items")
    products = frame(tables, "products", ["product_id", "weight_g"])
    if items is not None:
        if products is not None:
            items = items.merge(products, on="product_id", how="left")
            items["weight_total"] = items["weight_g"] * items["qty"]
        else:
            items["weight_total"] = np.nan
        grouped = items.groupby("order_id", sort=False)
        per_order = pd.DataFrame(
            {
                "item_count": grouped["qty"].sum(),
                "weight_g": grouped["weight_total"].sum(min_count=1),
            }
        )
        out = out.merge(per_order, left_on="order_id", right_index=True, how="left")
    else:
        out["item_count"] = np.nan
        out["weight_g"] = np.nan
    orders = frame(tables, "orders", ["order_id", "order_ts", "amount"])
    out = out.merge(orders, on="order_id", how="left")
    return out.drop(columns=["order_id"])


def _ffill_within(values: np.ndarray, valid: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Index of the latest valid element at or before each position within its group
    (-1 when none), for a sequence sorted by group."""
    index = np.where(valid, np.arange(len(valid)), -1)
    latest = np.maximum.accumulate(index)
    return np.where(latest >= group_start, latest, -1)


def _daily_trailing(
    group: np.ndarray, day: np.ndarray, weight: np.ndarray, query_group, query_day, days: int
) -> np.ndarray:
    """Per query: sum of `weight` over the group's events on days [query_day - days,
    query_day - 1], i.e. as known at the midnight starting the query's day."""
    n_groups = int(max(group.max(initial=0), query_group.max(initial=0))) + 1
    first = int(min(day.min(initial=0), query_day.min(initial=0))) - days - 1
    last = int(max(day.max(initial=0), query_day.max(initial=0))) + 1
    span = last - first + 1
    # bincount over flattened (group, day) cells: np.add.at is an order of magnitude slower.
    cells = group.astype(np.int64) * span + (day - first)
    daily = np.bincount(cells, weights=weight, minlength=n_groups * span).reshape(n_groups, span)
    # before[g, d]: events of g on days strictly before d.
    before = np.concatenate([np.zeros((n_groups, 1)), np.cumsum(daily, axis=1)], axis=1)
    qd = query_day - first
    return before[query_group, qd] - before[query_group, qd - days]


CHUNK_SHIPMENTS = 500_000


@dataclass
class ShipmentPrep:
    """Everything shipment rows are computed from, for all shipments at once."""

    raw: pa.Table
    shipments: pd.DataFrame
    shipped: np.ndarray
    promised: np.ndarray
    parcels: pd.DataFrame
    ev_sid: np.ndarray
    ev_ts: np.ndarray
    ev_type: np.ndarray
    carrier: np.ndarray
    lane: np.ndarray
    lane_arrow: pa.ChunkedArray
    known_day: np.ndarray
    late: np.ndarray
    placed_sorted: np.ndarray
    waited_sorted: np.ndarray

    @property
    def n(self) -> int:
        return len(self.shipped)


def prepare_shipments(tables: dict[str, pa.Table]) -> ShipmentPrep | None:
    """Shipment facts, scans sorted by shipment, and the shop-wide series; None without
    shipments."""
    shipments = frame(tables, "shipments")
    if shipments is None or shipments.empty:
        return None
    shipped = us(shipments["shipped_ts"])
    events = tables.get("tracking_events")
    if events is not None:
        # Event types as small integer codes: tens of millions of scans stay cheap.
        ev_sid = codes_in(events.column("shipment_id"), tables["shipments"].column("shipment_id"))
        keep = ev_sid >= 0
        ev_ts = us(events.column("event_ts").to_pandas())[keep]
        ev_type = codes_in(events.column("event_type"), _TYPES)[keep].astype(np.int8)
        ev_sid = ev_sid[keep]
        order = np.argsort(ev_sid, kind="stable")
        ev_sid, ev_ts, ev_type = ev_sid[order], ev_ts[order], ev_type[order]
    else:
        ev_sid = np.empty(0, dtype=np.int64)
        ev_ts = np.empty(0, dtype=np.int64)
        ev_type = np.empty(0, dtype=np.int8)
    raw = tables["shipments"]
    lane_arrow = pc.binary_join_element_wise(
        raw.column("origin_region"), raw.column("destination_region"), ">"
    )
    carrier = np.asarray(
        pc.dictionary_encode(raw.column("carrier")).combine_chunks().indices, dtype=np.int64
    )
    lane = np.asarray(pc.dictionary_encode(lane_arrow).combine_chunks().indices, dtype=np.int64)
    known, late = late_outcomes(shipments)

    # Orders waiting to ship, shop-wide: placed before the instant and not dispatched by
    # then. Each order waits from order_ts until dispatch, or at most BACKLOG_DAYS when it
    # never ships (cancelled), so an order counts only while its wait is visible at t.
    orders = frame(tables, "orders", ["order_id", "order_ts"])
    placed_at = us(orders["order_ts"])
    dispatch = pd.Series(shipped, index=shipments["order_id"].to_numpy())
    dispatch = dispatch[~dispatch.index.duplicated()]
    waited_until = dispatch.reindex(orders["order_id"]).to_numpy(dtype=np.float64)
    cap = placed_at + BACKLOG_DAYS * US_PER_DAY
    waited_until = np.where(np.isnan(waited_until), cap, np.minimum(waited_until, cap))
    return ShipmentPrep(
        raw=raw,
        shipments=shipments,
        shipped=shipped,
        promised=us(shipments["promised_ts"]),
        parcels=_parcels(tables, shipments),
        ev_sid=ev_sid,
        ev_ts=ev_ts,
        ev_type=ev_type,
        carrier=carrier,
        lane=lane,
        lane_arrow=lane_arrow,
        known_day=known // US_PER_DAY,
        late=late,
        placed_sorted=np.sort(placed_at),
        waited_sorted=np.sort(waited_until.astype(np.int64)),
    )


def shipment_features(tables: dict[str, pa.Table]) -> pa.Table | None:
    """Build the shipment feature table in one piece; None when there are no shipments."""
    chunks = list(shipment_feature_chunks(tables))
    return pa.concat_tables(chunks) if chunks else None


def shipment_feature_chunks(
    tables: dict[str, pa.Table], chunk_shipments: int = CHUNK_SHIPMENTS
) -> Iterator[pa.Table]:
    """Build the shipment feature table a range of shipments at a time.

    Yields:
        Rows (shipment_id, event_ts) with the features listed in
        `features/repo/shipment_views.py`, in shipment order.
    """
    prep = prepare_shipments(tables)
    if prep is None:
        return
    for lo in range(0, prep.n, chunk_shipments):
        yield shipment_rows(prep, lo, min(lo + chunk_shipments, prep.n))


def shipment_rows(prep: ShipmentPrep, lo: int, hi: int) -> pa.Table:
    """Rows of shipments lo..hi-1 (positions in the shipments table)."""
    start, stop = np.searchsorted(prep.ev_sid, [lo, hi])
    ev_sid, ev_ts, ev_type = (
        prep.ev_sid[start:stop],
        prep.ev_ts[start:stop],
        prep.ev_type[start:stop],
    )
    shipped, promised, shipments, parcels = (
        prep.shipped,
        prep.promised,
        prep.shipments,
        prep.parcels,
    )
    n = hi - lo

    # One sequence of scans and dispatch rows, sorted by (shipment, instant); at one instant
    # the dispatch row comes after the scans, so every row counts the scans of its instant.
    seq_sid = np.concatenate([ev_sid, np.arange(lo, hi)])
    seq_ts = np.concatenate([ev_ts, shipped[lo:hi]])
    seq_type = np.concatenate([ev_type, np.full(n, _DISPATCH, dtype=np.int8)])
    is_scan = np.r_[np.ones(len(ev_sid), bool), np.zeros(n, bool)]
    order = np.lexsort((~is_scan, seq_ts, seq_sid))
    seq_sid, seq_ts, seq_type, is_scan = (
        seq_sid[order],
        seq_ts[order],
        seq_type[order],
        is_scan[order],
    )
    starts = np.r_[True, seq_sid[1:] != seq_sid[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(seq_sid)), 0))
    scans_so_far = np.cumsum(is_scan) - np.cumsum(is_scan)[group_start] + is_scan[group_start]
    is_exception = seq_type == _code("exception")
    exceptions_so_far = (
        np.cumsum(is_exception) - np.cumsum(is_exception)[group_start] + is_exception[group_start]
    )
    latest_scan = _ffill_within(seq_ts, is_scan, group_start)
    last_scan_ts = np.where(
        latest_scan >= 0, seq_ts[np.maximum(latest_scan, 0)], np.iinfo(np.int64).min
    )
    last_type = np.where(latest_scan >= 0, seq_type[np.maximum(latest_scan, 0)], _code(_NONE))
    # The previous scan of a row: the latest scan before the first element at its instant.
    tie_start = np.r_[True, (seq_sid[1:] != seq_sid[:-1]) | (seq_ts[1:] != seq_ts[:-1])]
    tie_first = np.maximum.accumulate(np.where(tie_start, np.arange(len(seq_sid)), 0))
    before_tie = tie_first - 1
    prev_scan = np.where(before_tie >= group_start, latest_scan[np.maximum(before_tie, 0)], -1)
    prev_scan_ts = np.where(prev_scan >= 0, seq_ts[np.maximum(prev_scan, 0)], -1)

    # Keep dispatch rows and update scans; of several at one instant, the last (it counts all).
    tie_last = np.r_[tie_start[1:], True]
    is_row = (~is_scan | np.isin(seq_type, [_code(t) for t in UPDATE_EVENTS])) & tie_last
    rows = np.flatnonzero(is_row)
    row_sid, row_ts = seq_sid[rows], seq_ts[rows]
    last_scan_ts = last_scan_ts[rows]
    last_scan_ts = np.where(is_missing_us(last_scan_ts), shipped[row_sid], last_scan_ts)
    prev_scan_ts = prev_scan_ts[rows]
    prev_scan_ts = np.where(prev_scan_ts < 0, shipped[row_sid], prev_scan_ts)

    # Strings stay in Arrow and are gathered with `take`: no Python object per row.
    raw, carrier, lane, lane_arrow = prep.raw, prep.carrier, prep.lane, prep.lane_arrow
    rows_arrow = pa.array(row_sid)

    def gathered(values: pa.ChunkedArray) -> pa.ChunkedArray:
        return values.take(rows_arrow)

    dispatch_time = pd.DatetimeIndex(pd.to_datetime(shipped[row_sid], unit="us"))
    features = {
        "shipment_id": gathered(raw.column("shipment_id")),
        "event_ts": row_ts,
        "stage": _TYPES.take(pa.array(seq_type[rows])),
        "carrier": gathered(raw.column("carrier")),
        "service_level": gathered(raw.column("service_level")),
        "origin_region": gathered(raw.column("origin_region")),
        "destination_region": gathered(raw.column("destination_region")),
        "lane": gathered(lane_arrow),
        "distance_km": shipments["distance_km"].to_numpy(dtype=np.float64)[row_sid],
        "promised_transit_days": ((promised - shipped) / US_PER_DAY)[row_sid],
        "dispatch_weekday": dispatch_time.weekday.to_numpy(),
        "dispatch_hour": dispatch_time.hour.to_numpy(),
        "peak_season": peak_season(row_ts),
        "weight_g": parcels["weight_g"].to_numpy(dtype=np.float64)[row_sid],
        "item_count": parcels["item_count"].to_numpy(dtype=np.float64)[row_sid],
        "order_amount": parcels["amount"].to_numpy(dtype=np.float64)[row_sid],
        "scans_so_far": scans_so_far[rows],
        "exceptions_so_far": exceptions_so_far[rows],
        "last_event_type": _TYPES.take(pa.array(last_type[rows])),
        "hours_since_prev_scan": (row_ts - prev_scan_ts) / (3600 * US_PER_S),
        "shipped_epoch": epoch_s(shipped)[row_sid],
        "promised_epoch": epoch_s(promised)[row_sid],
        "last_scan_epoch": epoch_s(last_scan_ts),
    }

    # How the carrier and the lane did on parcels whose outcome was known by the midnight
    # that starts the row's day: network statistics are a daily batch.
    row_day = row_ts // US_PER_DAY
    every = np.ones(prep.n)
    for name, codes in (("carrier", carrier), ("lane", lane)):
        for days in WINDOWS_DAYS:
            total = _daily_trailing(codes, prep.known_day, every, codes[row_sid], row_day, days)
            n_late = _daily_trailing(
                codes, prep.known_day, prep.late.astype(float), codes[row_sid], row_day, days
            )
            with np.errstate(invalid="ignore", divide="ignore"):
                features[f"{name}_late_rate_{days}d"] = np.where(total > 0, n_late / total, np.nan)
            features[f"{name}_outcomes_{days}d"] = total.astype(np.int64)
    features["carrier_volume_7d"] = _daily_trailing(
        carrier, shipped // US_PER_DAY, every, carrier[row_sid], row_day, 7
    ).astype(np.int64)
    features["warehouse_backlog"] = np.searchsorted(prep.placed_sorted, row_ts) - np.searchsorted(
        prep.waited_sorted, row_ts
    )
    return to_table(features)
