"""Delay-risk labels from raw shipments, on a hand-made example, and its baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.contract.schema import SHIPMENTS, TRACKING_EVENTS
from models.delay_risk import SPEC, baseline, capacity_for, label_events

T0 = pd.Timestamp("2025-03-03 17:00", tz="UTC")


def _h(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


def _tables() -> dict[str, pa.Table]:
    # promise at +48 h for every parcel; the data ends at +100 h (latest timestamp below)
    ship = pd.DataFrame(
        {
            "shipment_id": ["on_time", "late", "lost", "open", "open_late"],
            "order_id": ["o1", "o2", "o3", "o4", "o5"],
            "carrier": "ParcelOne",
            "service_level": "standard",
            "origin_region": "DE",
            "destination_region": "FR",
            "distance_km": 800.0,
            "shipped_ts": [_h(0), _h(0), _h(0), _h(90), _h(0)],
            "promised_ts": [_h(48)] * 3 + [_h(138), _h(48)],
            "delivered_ts": [_h(30), _h(60), None, None, None],
        }
    )
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(10)],
            "shipment_id": [
                "on_time",  # in transit before delivery: a decision
                "on_time",  # delivered: no decision
                "late",  # in transit: a decision
                "late",  # exception at the same instant: one decision
                "late",  # out for delivery after the promise passed: none
                "lost",  # exception before the promise: a decision
                "lost",  # exception after the promise: none
                "open",  # undelivered, promise beyond the data: no label
                "open_late",  # still undelivered past the promise: late
                "open_late",
            ],
            "event_type": [
                "in_transit",
                "delivered",
                "in_transit",
                "exception",
                "out_for_delivery",
                "exception",
                "exception",
                "in_transit",
                "in_transit",
                "dispatched",
            ],
            "event_ts": [
                _h(10),
                _h(30),
                _h(12),
                _h(12),
                _h(55),
                _h(20),
                _h(84),
                _h(100),
                _h(5),
                _h(0),
            ],
        }
    )
    return {
        "shipments": pa.Table.from_pandas(
            ship, schema=SHIPMENTS.arrow_schema, preserve_index=False
        ),
        "tracking_events": pa.Table.from_pandas(
            events, schema=TRACKING_EVENTS.arrow_schema, preserve_index=False
        ),
    }


def test_label_events_match_a_hand_made_example() -> None:
    got = label_events(_tables())
    expected = pd.DataFrame(
        {
            "shipment_id": [
                *("late", "late", "lost", "lost"),
                *("on_time", "on_time", "open_late", "open_late"),
            ],
            "event_timestamp": [_h(0), _h(12), _h(0), _h(20), _h(0), _h(10), _h(0), _h(5)],
            "label": [1, 1, 1, 1, 0, 0, 1, 1],
            "label_ts": [_h(48)] * 8,
        }
    )
    got = got[expected.columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_label_events_without_tracking_are_dispatch_rows() -> None:
    tables = _tables()
    got = label_events({"shipments": tables["shipments"]})
    assert sorted(got["shipment_id"]) == ["late", "lost", "on_time", "open_late"]
    assert (got["event_timestamp"] == _h(0)).all()


def test_baseline_falls_back_from_lane_to_carrier_to_mean() -> None:
    frame = pd.DataFrame(
        {
            "lane_late_rate_28d": [0.2, np.nan, np.nan],
            "carrier_late_rate_28d": [0.1, 0.3, np.nan],
        }
    )
    assert baseline(frame).tolist() == [0.2, 0.3, 0.2]


def test_baseline_uses_the_destination_rate_where_the_origin_is_unknown() -> None:
    frame = pd.DataFrame(
        {
            "lane_late_rate_28d": [0.2, 0.4, np.nan, np.nan],
            "destination_late_rate_90d": [0.1, 0.3, 0.25, np.nan],
            "carrier_late_rate_28d": [0.5, 0.5, 0.5, 0.6],
            # Known origin, unknown origin (0 km: the lane is only its destination), then
            # known origins whose lane has no recent outcome.
            "distance_km": [120.0, 0.0, 80.0, 80.0],
        }
    )
    assert baseline(frame).tolist() == [0.2, 0.3, 0.25, 0.6]


def test_tracking_events_are_optional() -> None:
    assert SPEC.raw_tables == ("shipments",)
    assert SPEC.optional_tables == ("tracking_events",)


def test_spec_declares_what_the_loop_needs() -> None:
    assert SPEC.entity == ("shipment_id",)
    assert SPEC.feature_service == "delay_risk_v1"
    assert set(SPEC.segments) >= {"carrier", "destination_region"}
    assert not set(SPEC.exclude) & set(SPEC.derived)


@pytest.mark.parametrize(
    ("rows", "late", "leaves"),
    [
        (1659, 105, 2),  # the Olist sample's training window: stumps
        (5000, 250, 4),
        (5000, 450, 8),
        (150_000, 14_000, 31),  # the simulated business: full size
        (2000, 1900, 2),  # the rarer class counts, whichever it is
        (10, 0, 2),
    ],
)
def test_tree_size_follows_the_rarer_class(rows: int, late: int, leaves: int) -> None:
    labels = pd.Series([1] * late + [0] * (rows - late))
    assert capacity_for(labels) == {"num_leaves": leaves}


def test_tree_size_never_shrinks_with_more_late_parcels() -> None:
    sizes = [
        capacity_for(pd.Series([1] * k + [0] * 100_000))["num_leaves"] for k in range(0, 5000, 97)
    ]
    assert sizes == sorted(sizes)
    assert set(sizes) <= {2, 4, 8, 16, 31}
