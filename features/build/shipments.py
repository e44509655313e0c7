"""Shipment features at dispatch and after each tracking event.

One row per shipment at `shipped_ts` and one per later scan before delivery (in_transit,
exception, out_for_delivery), stamped at the scan. A row describes what was known at its
instant: the booking, the events up to and including that scan, and how the carrier and the
lane performed on parcels whose outcome was already known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.build.asof import EventIndex
from features.build.common import (
    US_PER_DAY,
    US_PER_S,
    epoch_s,
    frame,
    is_missing_us,
    peak_season,
    us,
)

WINDOWS_DAYS = (7, 28)
BACKLOG_DAYS = 30
# Scans that start a new prediction row; "dispatched" is the dispatch row itself and after
# "delivered" nothing is left to predict.
UPDATE_EVENTS = ("in_transit", "exception", "out_for_delivery")


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
        per_order = items.groupby("order_id", sort=False).agg(
            item_count=("qty", "sum"), weight_g=("weight_total", lambda s: s.sum(min_count=1))
        )
        out = out.merge(per_order, left_on="order_id", right_index=True, how="left")
    else:
        out["item_count"] = np.nan
        out["weight_g"] = np.nan
    orders = frame(tables, "orders", ["order_id", "order_ts", "amount"])
    out = out.merge(orders, on="order_id", how="left")
    return out.drop(columns=["order_id"])


def shipment_features(tables: dict[str, pa.Table]) -> pd.DataFrame | None:
    """Build the shipment feature table; None when the source has no shipments.

    Returns:
        One row per (shipment_id, event_ts) with the features listed in
        `features/repo/shipment_views.py`.
    """
    shipments = frame(tables, "shipments")
    if shipments is None or shipments.empty:
        return None
    n = len(shipments)
    shipped = us(shipments["shipped_ts"])
    promised = us(shipments["promised_ts"])
    parcels = _parcels(tables, shipments)

    # Prediction instants: dispatch, then each scan before delivery.
    events = frame(tables, "tracking_events", ["shipment_id", "event_type", "event_ts"])
    sid_codes, sid_uniques = pd.factorize(shipments["shipment_id"])
    if events is not None:
        ev_sid = pd.Index(sid_uniques).get_indexer(events["shipment_id"])
        keep = ev_sid >= 0
        events = events[keep]
        ev_sid = ev_sid[keep]
        ev_ts = us(events["event_ts"])
        ev_type = events["event_type"].to_numpy(dtype=object)
    else:
        ev_sid = np.empty(0, dtype=np.int64)
        ev_ts = np.empty(0, dtype=np.int64)
        ev_type = np.empty(0, dtype=object)
    update = np.isin(ev_type, UPDATE_EVENTS)
    row_sid = np.concatenate([sid_codes, ev_sid[update]])
    row_ts = np.concatenate([shipped, ev_ts[update]])
    row_stage = np.concatenate([np.full(n, "dispatch", dtype=object), ev_type[update]])

    # Scans so far, counted up to and including the row's own scan.
    scans = EventIndex.build(ev_sid, ev_ts)
    scans_so_far = scans.count(row_sid, row_ts, inclusive=True)
    exceptions = EventIndex.build(ev_sid[ev_type == "exception"], ev_ts[ev_type == "exception"])
    exceptions_so_far = exceptions.count(row_sid, row_ts, inclusive=True)
    last_scan = scans.last(ev_ts, row_sid, row_ts, inclusive=True, fill=np.iinfo(np.int64).min)
    last_scan = np.where(is_missing_us(last_scan), shipped[row_sid], last_scan)
    prev_scan = scans.last(ev_ts, row_sid, row_ts, inclusive=False, fill=np.iinfo(np.int64).min)
    prev_scan = np.where(is_missing_us(prev_scan), shipped[row_sid], prev_scan)
    last_type = scans.last(ev_type, row_sid, row_ts, inclusive=True, fill="dispatched")

    carrier = shipments["carrier"].to_numpy(dtype=object)
    origin = shipments["origin_region"].to_numpy(dtype=object)
    destination = shipments["destination_region"].to_numpy(dtype=object)
    lane = origin + ">" + destination
    features = {
        "shipment_id": shipments["shipment_id"].to_numpy(dtype=object)[row_sid],
        "event_ts": row_ts,
        "stage": row_stage,
        "carrier": carrier[row_sid],
        "service_level": shipments["service_level"].to_numpy(dtype=object)[row_sid],
        "origin_region": origin[row_sid],
        "destination_region": destination[row_sid],
        "lane": lane[row_sid],
        "distance_km": shipments["distance_km"].to_numpy(dtype=np.float64)[row_sid],
        "promised_transit_days": ((promised - shipped) / US_PER_DAY)[row_sid],
        "dispatch_weekday": pd.to_datetime(shipped, unit="us").weekday.to_numpy()[row_sid],
        "dispatch_hour": pd.to_datetime(shipped, unit="us").hour.to_numpy()[row_sid],
        "weight_g": parcels["weight_g"].to_numpy(dtype=np.float64)[row_sid],
        "item_count": parcels["item_count"].to_numpy(dtype=np.float64)[row_sid],
        "order_amount": parcels["amount"].to_numpy(dtype=np.float64)[row_sid],
        "scans_so_far": scans_so_far,
        "exceptions_so_far": exceptions_so_far,
        "last_event_type": last_type,
        "hours_since_prev_scan": (row_ts - prev_scan) / (3600 * US_PER_S),
        "shipped_epoch": epoch_s(shipped)[row_sid],
        "promised_epoch": epoch_s(promised)[row_sid],
        "last_scan_epoch": epoch_s(last_scan),
    }
    features["peak_season"] = peak_season(row_ts)

    # Performance of the carrier and the lane on parcels whose outcome was known before.
    known, late = late_outcomes(shipments)
    for name, keys in (("carrier", carrier), ("lane", lane)):
        codes, _ = pd.factorize(keys)
        index = EventIndex.build(codes, known)
        row_codes = codes[row_sid]
        for days in WINDOWS_DAYS:
            since = row_ts - days * US_PER_DAY
            total = index.count(row_codes, row_ts) - index.count(row_codes, since, inclusive=True)
            n_late = index.total(late, row_codes, row_ts) - index.total(
                late, row_codes, since, inclusive=True
            )
            with np.errstate(invalid="ignore", divide="ignore"):
                features[f"{name}_late_rate_{days}d"] = np.where(total > 0, n_late / total, np.nan)
            features[f"{name}_outcomes_{days}d"] = total

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
    zeros = np.zeros(len(placed_at), dtype=np.int64)
    starts = EventIndex.build(zeros, placed_at)
    ends = EventIndex.build(zeros, waited_until.astype(np.int64))
    row_zero = np.zeros(len(row_ts), dtype=np.int64)
    features["warehouse_backlog"] = starts.count(row_zero, row_ts) - ends.count(row_zero, row_ts)
    since = row_ts - 7 * US_PER_DAY
    carrier_codes, _ = pd.factorize(carrier)
    volume = EventIndex.build(carrier_codes, shipped)
    features["carrier_volume_7d"] = volume.count(carrier_codes[row_sid], row_ts) - volume.count(
        carrier_codes[row_sid], since, inclusive=True
    )

    out = pd.DataFrame(features)
    out["event_ts"] = pd.to_datetime(out["event_ts"], unit="us", utc=True)
    out = out.sort_values(["shipment_id", "event_ts"], kind="stable", ignore_index=True)
    # Two scans at the same instant would give two rows with one (entity, timestamp); the
    # later row already counts both scans, so it is the one to keep.
    return out.drop_duplicates(["shipment_id", "event_ts"], keep="last", ignore_index=True)
