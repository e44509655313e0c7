"""Delay-risk labels from raw shipments, on a hand-made example, and its baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.build.shipments import UPDATE_EVENTS
from features.contract.schema import SHIPMENTS, TRACKING_EVENTS
from features.instants import utc_times
from models.delay_risk import SPEC, baseline, capacity_for, label_events, starts_from_baseline

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


@pytest.mark.parametrize(
    ("rows", "late", "from_baseline"),
    [
        (1659, 105, True),  # the Olist sample's training window
        (391, 36, True),  # its first cross-validation fold
        (5000, 250, False),  # four leaves: enough to learn from the mean
        (150_000, 14_000, False),  # the simulated business
        (2000, 1900, True),  # the rarer class counts, whichever it is
    ],
)
def test_few_late_parcels_start_the_trees_from_the_baseline(
    rows: int, late: int, from_baseline: bool
) -> None:
    labels = pd.Series([1] * late + [0] * (rows - late))
    assert starts_from_baseline(labels) is from_baseline
    assert SPEC.offset_rule is starts_from_baseline


def test_tree_size_never_shrinks_with_more_late_parcels() -> None:
    sizes = [
        capacity_for(pd.Series([1] * k + [0] * 100_000))["num_leaves"] for k in range(0, 5000, 97)
    ]
    assert sizes == sorted(sizes)
    assert set(sizes) <= {2, 4, 8, 16, 31}


def _random_decisions(seed: int, ids: list):
    """Shipments, their scans (repeated instants, unknown parcels, missing instants) and
    per-shipment columns, at random."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    base = pd.Timestamp("2025-01-01", tz="UTC")
    hours = pd.to_timedelta(rng.integers(0, 200, n), unit="h")
    shipped = pd.Series(base + hours)
    shipped[rng.random(n) < 0.05] = pd.NaT
    ships = pd.DataFrame({"shipment_id": ids, "shipped_ts": shipped})
    m = 6 * n
    scanned = [*ids, "never_shipped", "ü-parcel"]
    scan_hours = rng.integers(0, 300, m)
    events = pa.table(
        {
            "shipment_id": pa.array([str(x) for x in rng.choice(scanned, m)]),
            "event_type": pa.array(rng.choice(["in_transit", "exception", "delivered", None], m)),
            "event_ts": pa.array(
                (base + pd.to_timedelta(scan_hours, unit="h")).to_numpy(),
                type=pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    closes = pd.Series(base + pd.to_timedelta(rng.integers(50, 300, n), unit="h"))
    closes[rng.random(n) < 0.05] = pd.NaT
    per_shipment = pd.DataFrame(
        {
            "shipment_id": ids,
            "label": rng.integers(0, 2, n),
            "label_ts": closes.array,
            "_closes": closes.array,
        }
    )
    return ships, events, per_shipment


@pytest.mark.parametrize("seed", range(3))
def test_decision_rows_by_arrow_equal_pandas_merge_and_sort(seed) -> None:
    """Arrow's join, order and repeated-scan removal give pandas' rows, to the dtype."""
    from models.delay_risk import _decision_rows_by_pandas, decision_rows

    ids = [f"s{i}" for i in range(400)] + ["ü-parcel", "S1", "s1 "]
    ships, events, per_shipment = _random_decisions(seed, ids)
    got = decision_rows(ships, events, per_shipment)
    scans = events.filter(pc.is_in(events["event_type"], value_set=pa.array(UPDATE_EVENTS)))
    expected = _decision_rows_by_pandas(
        [ships["shipment_id"], scans["shipment_id"]],
        [ships["shipped_ts"], utc_times(scans["event_ts"].to_pandas())],
        per_shipment,
    )
    assert len(got) > len(ids)
    pd.testing.assert_frame_equal(got, expected)
    assert not got.duplicated(["shipment_id", "event_timestamp"]).any()


def test_decision_rows_of_a_shipment_listed_twice_are_pandas_merge() -> None:
    """A shipment with two per-shipment rows makes each row's decisions, as a merge does."""
    from models.delay_risk import decision_rows

    ids = ["a", "b", "c"]
    ships, events, per_shipment = _random_decisions(1, ids)
    twice = pd.concat([per_shipment, per_shipment.iloc[[0]]], ignore_index=True)
    got = decision_rows(ships, events, twice)
    once = decision_rows(ships, events, per_shipment)
    first = once[once["shipment_id"] == per_shipment["shipment_id"][0]]
    assert len(got) == len(once) + len(first)
