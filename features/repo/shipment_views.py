"""Shipment feature views."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Bool, Float64, Int64, String

from features.repo.entities import shipment
from features.repo.sources import shipment_events_source

_booking = [
    Field(name="carrier", dtype=String, description="Carrier."),
    Field(
        name="service_level",
        dtype=String,
        description="Service level (economy, standard or express).",
    ),
    Field(name="origin_region", dtype=String, description="Warehouse region."),
    Field(name="destination_region", dtype=String, description="Delivery region."),
    Field(
        name="customer_timezone",
        dtype=String,
        description="The customer's IANA time zone, where delivery dates are told.",
    ),
    Field(name="lane", dtype=String, description="Route (origin>destination)."),
    Field(name="distance_km", dtype=Float64, description="Route distance."),
    Field(name="promised_transit_days", dtype=Float64, description="Promised transit time, days."),
    Field(name="dispatch_weekday", dtype=Int64, description="Weekday of dispatch (UTC, Mon=0)."),
    Field(name="dispatch_hour", dtype=Int64, description="Hour of dispatch (UTC)."),
    Field(
        name="peak_season",
        dtype=Bool,
        description="Peak season (Black Friday week to Christmas Eve).",
    ),
    Field(name="weight_g", dtype=Float64, description="Parcel weight from the catalogue."),
    Field(name="item_count", dtype=Float64, description="Units in the parcel."),
    Field(name="order_amount", dtype=Float64, description="Value of the order shipped."),
    Field(name="shipped_epoch", dtype=Float64, description="Dispatch, epoch seconds."),
    Field(name="promised_epoch", dtype=Float64, description="Promise, epoch seconds."),
]
_progress = [
    Field(name="stage", dtype=String, description="Tracking stage (dispatch or the scan)."),
    Field(name="scans_so_far", dtype=Int64, description="Tracking scans up to this row."),
    Field(name="exceptions_so_far", dtype=Int64, description="Exception scans so far."),
    Field(name="last_event_type", dtype=String, description="Latest scan type."),
    Field(name="last_scan_epoch", dtype=Float64, description="Latest scan, epoch seconds."),
    Field(
        name="hours_since_prev_scan",
        dtype=Float64,
        description="Hours between the latest two scans.",
    ),
]
_network = [
    Field(
        name=f"{group}_{what}_{days}d",
        dtype=Float64 if what == "late_rate" else Int64,
        description=(
            f"Late share of the {group}'s parcels whose outcome became known in the trailing "
            f"{days} days"
            if what == "late_rate"
            else f"Parcels of the {group} whose outcome became known in the trailing {days} days"
        ),
    )
    for group in ("carrier", "lane")
    for what in ("late_rate", "outcomes")
    for days in (7, 28)
]
# The destination region's record: the fallback where a lane is sparse or its origin
# unknown (then the lane is only its destination), over a longer window as well.
_network += [
    Field(
        name=f"destination_{what}_{days}d",
        dtype=Float64 if what == "late_rate" else Int64,
        description=(
            "Late share of parcels to the destination region whose outcome became known in "
            f"the trailing {days} days"
            if what == "late_rate"
            else "Parcels to the destination region whose outcome became known in the "
            f"trailing {days} days"
        ),
    )
    for days in (28, 90)
    for what in ("late_rate", "outcomes")
]
# A parcel is late when its transit exceeds the promise: how long it should take, fitted on
# the parcels delivered in the trailing 365 days before the row's day, and the promise
# measured against it.
_transit = [
    Field(
        name="expected_log_transit_hours",
        dtype=Float64,
        description="Expected log transit hours (carrier, service level, weekday, distance, "
        "weight), fitted on the parcels delivered in the trailing 365 days",
    ),
    Field(
        name="transit_log_spread",
        dtype=Float64,
        description="Spread of log transit hours around that fit, per carrier and service level",
    ),
    Field(
        name="promise_slack_spreads",
        dtype=Float64,
        description="Log promised hours above the expected log transit, in spreads",
    ),
    # Where transit times drift, the recent level per destination follows them; the
    # delivery estimate learns its hours relative to it.
    Field(
        name="destination_log_transit_90d",
        dtype=Float64,
        description="Mean log transit hours of the parcels to the destination region delivered "
        "in the trailing 90 days",
    ),
]
_load = [
    Field(
        name="warehouse_backlog",
        dtype=Int64,
        description="Orders placed and not yet dispatched, shop-wide (within 30 days).",
    ),
    Field(name="carrier_volume_7d", dtype=Int64, description="Carrier dispatches, 7 days."),
    # A peak's orders congest the network for days; a ratio, so that growth is no peak.
    Field(
        name="orders_7d_over_28d",
        dtype=Float64,
        description="Orders placed shop-wide per day in the past week against the past four weeks",
    ),
]

# A parcel's state at dispatch and after every scan. The TTL bounds how long after its last
# scan a parcel is still scored: beyond 60 days it is closed business.
shipment_events = FeatureView(
    name="shipment_events",
    entities=[shipment],
    ttl=timedelta(days=60),
    schema=[*_booking, *_progress, *_network, *_transit, *_load],
    source=shipment_events_source,
    online=True,
    description="Shipment state at dispatch and after each tracking scan.",
)
