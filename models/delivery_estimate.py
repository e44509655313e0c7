"""Delivery estimate: on which day will this parcel arrive, and between which days?

- Entity: shipment. Decisions: at dispatch and after each tracking scan (in transit,
  exception, out for delivery) before delivery — the decision events of `delay_risk`.
- Label: the hours from the decision to the delivery, modelled as log hours (transit times
  are close to lognormal, and a log target keeps every estimate after the decision).
- Estimator: LightGBM quantile boosters at (1 − coverage)/2, 1/2 and (1 + coverage)/2 on
  the `delivery_estimate_v1` features plus the decision-time hours, learning the log hours
  above each row's anchor (`ANCHOR`: the destination's recent transit level), from at most
  `FIT_ROWS` training rows (a sample of shipments); the window is then
  conformally calibrated per carrier and decision stage, at the level of calendar days in
  the customer's time zone: adaptively (ACI on the latest outcomes, `CALIBRATION`), the
  latest labelled rows before the test window warming it up, or once on those rows.
- The most likely date is the local date of the median instant: the median minimises the
  expected absolute error in days.
- Lost and undelivered parcels: a shipment is used once its outcome is settled, i.e. it was
  delivered or its promise lies `SETTLED_AFTER` before the data's end (the rule does not
  look at the outcome, so no long delivery is selected out). A settled parcel without a
  delivery is lost: it has no delivery time to learn from, so it is left out of training,
  but it counts against coverage — in the conformal calibration (a score of +inf) and in
  every evaluation — and is left out of the errors in days.
- Baseline: the shop's own promise (`promised_ts`) on the same rows: its date as the point
  estimate and (decision day, promised day) as its window.
- Segments: carrier, lane and the decision stage.
- Serving: `WindowModel.predict_window(rows, as_of, timezone)` (`models.served.window`);
  training: `training.delivery`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from features.build.shipments import UPDATE_EVENTS
from features.instants import utc_times
from models.delay_risk import (
    SHIPMENT_CATEGORICAL,
    SHIPMENT_DERIVED,
    SHIPMENT_EXCLUDE,
    data_end,
    decision_rows,
)
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, Kind, ModelSpec

NAME = "delivery_estimate"
COVERAGE = 0.90
PRIMARY_METRIC = "mae_days"
SETTLED_AFTER = pd.Timedelta(days=14)
# How the window is calibrated (`training.conformal`): "adaptive" follows the outcomes as
# they arrive, so a drifting transit time does not leave the window short; "split" fits the
# offsets once on the calibration window.
CALIBRATION = "adaptive"
# Conformal groups: each carrier at each decision stage, so the window holds its coverage
# at dispatch as well as after a scan, and for an erratic carrier as for a steady one.
GROUP = ("carrier", "stage")
SEGMENTS = ("carrier", "lane", "stage")
# What the boosters' log hours are added to: the destination region's recent transit level,
# else the year's fit of the carrier and service level; the boosters learn the rest. Trees
# cannot reach beyond the hours they were trained on, so without an anchor a transit time
# that drifts longer (Olist's test months) leaves every estimate short.
ANCHOR = ("destination_log_transit_90d", "expected_log_transit_hours")
# Training rows the quantile boosters learn from at most (one seeded sample of whole
# shipments beyond it). The outer two only place the window's edges, which the conformal
# offsets move to the stated coverage; the middle one, the estimate, learnt from 1.7 million
# rows at 1,000,000 customers in 270 s, most of the run. 600,000 is about a third of the
# training rows at 1,000,000 customers and four times those at 20,000.
FIT_ROWS = 600_000
DECISION_STAGES = ("dispatch", *UPDATE_EVENTS)
# Columns the label events carry besides the label, for evaluation and the window's dates.
DELIVERED = "delivered_ts"
PROMISED = "promised_ts"
TIMEZONE = "timezone"


# The raw columns `decision_outcomes` reads, by table: a reader may leave out the rest.
OUTCOME_COLUMNS: dict[str, tuple[str, ...]] = {
    "shipments": ("shipment_id", "order_id", "shipped_ts", PROMISED, DELIVERED),
    "tracking_events": ("shipment_id", "event_type", "event_ts"),
    "orders": ("order_id", "customer_id"),
    "customers": ("customer_id", TIMEZONE),
}


def customer_timezones(tables: Mapping[str, pa.Table]) -> pd.DataFrame:
    """order_id → the customer's IANA time zone (empty when orders or customers are absent)."""
    if "orders" not in tables or "customers" not in tables:
        return pd.DataFrame({"order_id": pd.Series(dtype=object), TIMEZONE: []})
    orders = tables["orders"].select(list(OUTCOME_COLUMNS["orders"])).to_pandas()
    customers = tables["customers"].select(list(OUTCOME_COLUMNS["customers"])).to_pandas()
    return orders.merge(customers, on="customer_id", how="left")[["order_id", TIMEZONE]]


def label_events(tables: dict[str, pa.Table]) -> pd.DataFrame:
    """One row per (shipment, decision instant) of a settled shipment, with its delivery.

    Args:
        tables: Raw tables: `shipments`; when present `tracking_events`, and `orders` with
            `customers` for the customer's time zone (UTC otherwise).

    Returns:
        shipment_id, event_timestamp, label (log hours to delivery; NaN for a lost parcel),
        label_ts (when the outcome is settled: the delivery, or `SETTLED_AFTER` past the
        promise, whichever is later), delivered_ts, promised_ts and timezone.
    """
    rows = decision_outcomes(tables)
    ships = tables["shipments"].select(["shipped_ts", "delivered_ts"]).to_pandas()
    ships = ships.apply(utc_times)
    end = data_end(ships, tables.get("tracking_events"))
    settled = rows[rows[PROMISED] + SETTLED_AFTER <= end]
    return settled.reset_index(drop=True)


def decision_outcomes(tables: dict[str, pa.Table]) -> pd.DataFrame:
    """`label_events` of every shipment, settled or not: a parcel still on its way has no
    delivery (NaT) yet, and its `label_ts` (the earliest it can be settled) lies ahead."""
    ships = tables["shipments"].select(list(OUTCOME_COLUMNS["shipments"])).to_pandas()
    for column in ("shipped_ts", PROMISED, DELIVERED):
        ships[column] = utc_times(ships[column])
    events = tables.get("tracking_events")
    zones = customer_timezones(tables)
    ships = ships.merge(zones, on="order_id", how="left")
    ships[TIMEZONE] = ships[TIMEZONE].fillna("UTC")
    settled = ships[PROMISED] + SETTLED_AFTER
    known = ships[DELIVERED].where(ships[DELIVERED] > settled, settled)
    # Decisions stop at delivery; a lost parcel is scored until it is settled as lost.
    closes = ships[DELIVERED].fillna(settled)
    # Instants as arrays of their own type: `to_numpy` would make one object per instant.
    per_shipment = pd.DataFrame(
        {
            "shipment_id": ships["shipment_id"].to_numpy(),
            LABEL_KNOWN: known.astype("datetime64[ns, UTC]").array,
            DELIVERED: ships[DELIVERED].astype("datetime64[ns, UTC]").array,
            PROMISED: ships[PROMISED].astype("datetime64[ns, UTC]").array,
            TIMEZONE: ships[TIMEZONE].to_numpy(),
            "_closes": closes.array,
        }
    )
    rows = decision_rows(ships, events, per_shipment)
    hours = (rows[DELIVERED] - rows[EVENT_TIME]) / pd.Timedelta(hours=1)
    rows[LABEL] = np.log(hours.to_numpy(dtype=np.float64))
    return rows


def promise_hours(frame: pd.DataFrame) -> np.ndarray:
    """Hours from each decision to the promise (the baseline's point estimate)."""
    return ((frame[PROMISED] - frame[EVENT_TIME]) / pd.Timedelta(hours=1)).to_numpy(np.float64)


SPEC = ModelSpec(
    name=NAME,
    kind=Kind.WINDOW,
    metric_label="test MAE (days)",
    entity=("shipment_id",),
    decision_time="at dispatch and after each tracking scan, before delivery",
    raw_tables=("shipments",),
    # Scans add decisions; orders with customers place dates in the customer's time zone
    # (UTC without them). The Olist sample has no scans.
    optional_tables=("tracking_events", "orders", "customers"),
    label_events=label_events,
    feature_service="delivery_estimate_v1",
    categorical=SHIPMENT_CATEGORICAL,
    # The shop's recent demand was measured on delay risk only; the estimate keeps the inputs
    # its figures were measured with.
    exclude=(*SHIPMENT_EXCLUDE, "orders_7d_over_28d"),
    derived=SHIPMENT_DERIVED,
    baseline=promise_hours,
    segments=SEGMENTS,
    primary_metric=PRIMARY_METRIC,
    higher_is_better=False,
    params={
        "objective": "quantile",
        "metric": "quantile",
        "num_leaves": 31,
        "learning_rate": 0.05,
        "min_data_in_leaf": 40,
    },
    baseline_is_probability=False,
    words={
        "stage": "Tracking stage",
        "scans_so_far": "Tracking scans so far",
        "exceptions_so_far": "Exception scans so far",
        "last_event_type": "Latest tracking scan",
        "hours_since_prev_scan": "Hours between the latest two scans",
        "dispatch_weekday": "Weekday of dispatch (Monday = 0)",
    },
    options={
        "coverage": COVERAGE,
        "group": GROUP,
        "settled_after": SETTLED_AFTER,
        "calibration": CALIBRATION,
        "anchor": ANCHOR,
        "fit_rows": FIT_ROWS,
    },
)
