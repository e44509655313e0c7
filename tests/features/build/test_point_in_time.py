"""Feature rows equal an independent, row-by-row as-of computation on hand-made data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.build.customers import customer_features
from features.build.derived import add_time_features
from features.build.offers import customer_category_features, order_features
from features.build.shipments import (
    DEMAND_DAYS,
    DESTINATION_TRANSIT_DAYS,
    TRANSIT_FIT_DAYS,
    TRANSIT_MIN_DELIVERIES,
    shipment_features,
)
from features.contract.schema import CONTRACT


def ts(day: int, hour: int = 12) -> datetime:
    return datetime(2024, 3, 1, tzinfo=UTC) + timedelta(days=day, hours=hour)


def to_tables(frames: dict[str, pd.DataFrame]) -> dict[str, pa.Table]:
    out = {}
    for name, frame in frames.items():
        # The columns the frame has: a source sends no ingest-filled or optional column.
        schema = pa.schema([f for f in CONTRACT[name].arrow_schema if f.name in frame.columns])
        out[name] = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return out


@pytest.fixture(scope="module")
def raw() -> dict[str, pd.DataFrame]:
    customers = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "signup_ts": [ts(-40), ts(-10)],
            "region": ["DE-N", "FR"],
            "timezone": ["Europe/Berlin", "Europe/Paris"],
            "language": ["de", "fr"],
            "preferred_channel": ["email", "sms"],
            "consent_email": [True, True],
            "consent_sms": [False, True],
            "consent_voice": [False, False],
            "consent_marketing": [True, False],
        }
    )
    products = pd.DataFrame(
        {
            "product_id": ["p1", "p2"],
            "category": ["fashion", "books"],
            "price": [40.0, 10.0],
            "margin": [0.4, 0.2],
            "weight_g": [500.0, 300.0],
        }
    )
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4"],
            "customer_id": ["a", "a", "b", "a"],
            "order_ts": [ts(0), ts(5), ts(6), ts(50)],
            "amount": [50.0, 40.0, 10.0, 20.0],
            "payment_method": ["card", "invoice", "card", "card"],
        }
    )
    order_items = pd.DataFrame(
        {
            "order_id": ["o1", "o1", "o2", "o3", "o4"],
            "product_id": ["p1", "p2", "p1", "p2", "p2"],
            "qty": [1, 1, 1, 1, 2],
            "unit_price": [40.0, 10.0, 40.0, 10.0, 10.0],
        }
    )
    shipments = pd.DataFrame(
        {
            "shipment_id": ["s1", "s2", "s3", "s4"],
            "order_id": ["o1", "o2", "o3", "o4"],
            "carrier": ["fast", "fast", "slow", "fast"],
            "service_level": ["standard"] * 4,
            "origin_region": ["DE-N"] * 4,
            "destination_region": ["DE-N", "DE-N", "FR", "DE-N"],
            "distance_km": [100.0, 100.0, 800.0, 100.0],
            "shipped_ts": [ts(0, 18), ts(5, 18), ts(6, 18), ts(50, 18)],
            "promised_ts": [ts(3, 23), ts(8, 23), ts(9, 23), ts(53, 23)],
            # s1 on time, s2 late (delivered after the promise), s3 lost, s4 on time.
            "delivered_ts": [ts(2), ts(11), None, ts(52)],
        }
    )
    tracking_events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(7)],
            "shipment_id": ["s1", "s1", "s1", "s2", "s2", "s2", "s2"],
            "event_type": [
                "dispatched",
                "in_transit",
                "delivered",
                "dispatched",
                "in_transit",
                "exception",
                "delivered",
            ],
            "event_ts": [ts(0, 18), ts(1, 6), ts(2), ts(5, 18), ts(6, 6), ts(7, 9), ts(11)],
        }
    )
    contacts = pd.DataFrame(
        {
            "contact_id": ["k1", "k2", "k3"],
            "customer_id": ["a", "a", "b"],
            "order_id": ["o2", "o2", "o3"],
            "ts": [ts(9), ts(12), ts(12)],
            "channel": ["voice", "chat", "email"],
            "language": ["de", "de", "fr"],
            "reason": ["delivery_delay", "complaint", "missing_item"],
            "handled_by": ["ai_agent", "human", "human"],
            "wait_s": [60.0, 300.0, 0.0],
            "handle_s": [120.0, 600.0, 200.0],
            "transfers": [1, 0, 0],
            "resolved_first_contact": [False, True, True],
            "csat": [2, None, 4],
            "ces": [6, None, 2],
            "nps": [3, None, 9],
        }
    )
    returns = pd.DataFrame(
        {
            "return_id": ["r1"],
            "order_id": ["o2"],
            "product_id": ["p1"],
            "reason": ["late_delivery"],
            "requested_ts": [ts(13)],
            "refunded_ts": [ts(20)],
            "amount": [40.0],
        }
    )
    return {
        "customers": customers,
        "products": products,
        "orders": orders,
        "order_items": order_items,
        "shipments": shipments,
        "tracking_events": tracking_events,
        "contacts": contacts,
        "returns": returns,
    }


def window_start(at: datetime, days: int) -> datetime:
    """Where a trailing window of whole days starts for a decision at `at`: the days before
    the decision's UTC day, and that day so far."""
    return at.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)


def naive_customer_row(raw: dict[str, pd.DataFrame], customer: str, at: datetime) -> dict:
    """What a careful analyst would compute for one customer at one instant."""
    orders = raw["orders"][raw["orders"]["customer_id"] == customer]
    before = orders[orders["order_ts"] < at]
    year_ago = window_start(at, 365)
    shipments = raw["shipments"].merge(orders[["order_id"]], on="order_id")
    known_late = []
    for row in shipments.itertuples():
        late = pd.isna(row.delivered_ts) or row.delivered_ts > row.promised_ts
        known_at = row.promised_ts if late else row.delivered_ts
        if known_at < at:
            known_late.append(late)
    contacts = raw["contacts"][raw["contacts"]["customer_id"] == customer]
    contacts = contacts[contacts["ts"] < at]
    window = contacts[contacts["ts"] >= window_start(at, 30)]
    returns = raw["returns"].merge(orders[["order_id"]], on="order_id")
    requested = returns[returns["requested_ts"] < at]
    refunded = returns[returns["refunded_ts"] < at]
    return {
        "orders_total": len(before),
        "orders_365d": int((before["order_ts"] >= year_ago).sum()),
        "monetary_total": float(before["amount"].sum()),
        "last_order_amount": float(before["amount"].iloc[-1]) if len(before) else np.nan,
        "deliveries_total": len(known_late),
        "late_deliveries_total": int(sum(known_late)),
        "contacts_total": len(contacts),
        "contacts_delivery_delay_30d": int((window["reason"] == "delivery_delay").sum()),
        "contacts_complaint_30d": int((window["reason"] == "complaint").sum()),
        "last_contact_reason": contacts["reason"].iloc[-1] if len(contacts) else None,
        "fcr_rate": contacts["resolved_first_contact"].mean() if len(contacts) else np.nan,
        "csat_mean": contacts["csat"].dropna().mean() if contacts["csat"].notna().any() else np.nan,
        "returns_total": len(requested),
        "open_returns": len(requested) - len(refunded),
    }


def test_customer_snapshots_match_naive_as_of(raw) -> None:
    features = customer_features(to_tables(raw)).to_pandas()
    assert not features.duplicated(["customer_id", "event_ts"]).any()
    checked = 0
    for row in features.itertuples():
        expected = naive_customer_row(raw, row.customer_id, row.event_ts.to_pydatetime())
        for name, value in expected.items():
            got = getattr(row, name)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                assert got is None or (isinstance(got, float) and np.isnan(got)), (row, name)
            else:
                assert got == pytest.approx(value), (row.customer_id, row.event_ts, name)
            checked += 1
    assert checked > 100


def test_snapshots_exist_when_a_window_expires(raw) -> None:
    features = customer_features(to_tables(raw)).to_pandas()
    a = features[features["customer_id"] == "a"].set_index("event_ts").sort_index()

    def as_of(at: datetime) -> pd.Series:
        return a.loc[: pd.Timestamp(at)].iloc[-1]

    # The complaint (day 12, noon) is seen from the next second, and is in the 30-day
    # window until the midnight after it plus 30 days; rows exist exactly then.
    first_seen = ts(12) + timedelta(seconds=1)
    assert pd.Timestamp(first_seen) in a.index
    assert as_of(first_seen - timedelta(microseconds=1))["contacts_complaint_30d"] == 0
    assert as_of(first_seen)["contacts_complaint_30d"] == 1
    leaves = ts(13, 0) + timedelta(days=30)
    assert pd.Timestamp(leaves) in a.index
    assert as_of(leaves - timedelta(seconds=1))["contacts_complaint_30d"] == 1
    assert as_of(leaves)["contacts_complaint_30d"] == 0
    assert as_of(leaves)["contacts_complaint_90d"] == 1


def test_inferred_reasons_are_counted_only_after_their_contact(raw) -> None:
    # k2, customer a's complaint on day 12 at noon, came as text and its reason was inferred.
    contacts = raw["contacts"].assign(reason_inferred=[False, True, False])
    features = customer_features(to_tables({**raw, "contacts": contacts})).to_pandas()
    a = features[features["customer_id"] == "a"].set_index("event_ts").sort_index()

    def as_of(at: datetime) -> pd.Series:
        return a.loc[: pd.Timestamp(at)].iloc[-1]

    first_seen = ts(12) + timedelta(seconds=1)
    assert as_of(first_seen - timedelta(microseconds=1))["inferred_reason_contacts_30d"] == 0
    after = as_of(first_seen)
    assert after["inferred_reason_contacts_30d"] == 1
    # Beside the per-reason counts, which count it as the complaint it was read as.
    assert after["contacts_complaint_30d"] == 1
    assert after["contacts_delivery_delay_30d"] == 1
    leaves = ts(13, 0) + timedelta(days=30)
    assert as_of(leaves - timedelta(seconds=1))["inferred_reason_contacts_30d"] == 1
    assert as_of(leaves)["inferred_reason_contacts_30d"] == 0
    assert as_of(leaves)["inferred_reason_contacts_90d"] == 1
    b = features[features["customer_id"] == "b"]
    assert (b["inferred_reason_contacts_365d"] == 0).all()


def test_contacts_without_the_marker_count_no_inferred_reasons(raw) -> None:
    features = customer_features(to_tables(raw)).to_pandas()
    assert (features["inferred_reason_contacts_365d"] == 0).all()


def test_a_decision_sees_the_orders_placed_earlier_that_day(raw) -> None:
    customers = raw["customers"][raw["customers"]["customer_id"] == "a"]
    day = ts(30, 0)
    first, second = day + timedelta(hours=20, minutes=56), day + timedelta(hours=22, minutes=53)
    orders = pd.DataFrame(
        {
            "order_id": ["x1", "x2"],
            "customer_id": ["a", "a"],
            "order_ts": [first, second],
            "amount": [50.0, 40.0],
            "payment_method": ["card"] * 2,
        }
    )
    features = customer_features(to_tables({"customers": customers, "orders": orders}))
    a = features.to_pandas().set_index("event_ts").sort_index()

    def as_of(at: datetime) -> pd.Series:
        return a.loc[: pd.Timestamp(at)].iloc[-1]

    decision = day + timedelta(hours=23, minutes=44)
    late = as_of(decision)
    assert late["orders_total"] == 2
    assert late["orders_365d"] == 2
    assert late["monetary_total"] == 90.0
    assert late["last_order_epoch"] == second.timestamp()
    assert late["first_order_epoch"] == first.timestamp()
    assert late["last_order_amount"] == 40.0
    derived = add_time_features(late.to_frame().T, pd.Timestamp(decision))
    assert derived["days_since_last_order"].iloc[0] == pytest.approx(51 / 1440)
    # No leakage: at the instant of the second order, and just before, only the first.
    for at in (second, second - timedelta(microseconds=1), first + timedelta(seconds=1)):
        assert as_of(at)["orders_total"] == 1, at
        assert as_of(at)["last_order_epoch"] == first.timestamp(), at
    assert as_of(first)["orders_total"] == 0
    assert np.isnan(as_of(first)["last_order_epoch"])
    # The next midnight holds what a daily snapshot there holds.
    assert as_of(day + timedelta(days=1))["orders_total"] == 2


def test_shipment_rows_at_dispatch_and_after_each_scan(raw) -> None:
    features = shipment_features(to_tables(raw)).to_pandas().set_index(["shipment_id", "event_ts"])
    s2 = features.loc["s2"]
    # Dispatch, in_transit and exception, then the delivery row; nothing after it.
    assert list(s2["stage"]) == ["dispatch", "in_transit", "exception", "delivered"]
    assert list(s2["scans_so_far"]) == [1, 2, 3, 4]
    assert list(s2["exceptions_so_far"]) == [0, 0, 1, 1]
    assert s2["last_event_type"].iloc[2] == "exception"
    assert s2["last_event_type"].iloc[-1] == "delivered"
    # The delivery row is stamped at the delivery, the shipment's own delivered_ts.
    delivered = raw["shipments"].set_index("shipment_id").loc["s2", "delivered_ts"]
    assert pd.Timestamp(s2.index[-1]) == pd.Timestamp(delivered)
    # A parcel never delivered has no delivery row.
    assert "delivered" not in set(features.loc["s3"]["stage"])
    assert s2["hours_since_prev_scan"].iloc[1] == pytest.approx(12.0)
    # At s2's dispatch the carrier "fast" had s1's on-time outcome (known on day 2).
    assert s2["carrier_late_rate_7d"].iloc[0] == 0.0
    assert s2["carrier_outcomes_7d"].iloc[0] == 1
    s4 = features.loc["s4"].iloc[0]
    # By day 50 s1's and s2's outcomes are older than 28 days: no recent evidence.
    assert s4["carrier_outcomes_28d"] == 0
    assert np.isnan(s4["carrier_late_rate_28d"])
    assert features.loc["s1"]["weight_g"].iloc[0] == 800.0
    assert features.loc["s4"]["item_count"].iloc[0] == 2


def test_late_rate_counts_a_late_parcel_from_its_promise(raw) -> None:
    features = shipment_features(to_tables(raw)).to_pandas().set_index(["shipment_id", "event_ts"])
    s4 = features.loc["s4"].iloc[0]
    # "slow" has only s3 (lost, promise day 9): known late on day 9, gone from 28d by day 50.
    assert s4["lane_outcomes_28d"] == 0
    s2_exception = features.loc["s2"].iloc[2]  # day 7: s1 known on time, s2 not yet due
    assert s2_exception["carrier_outcomes_7d"] == 1


def test_destination_rate_looks_back_a_quarter(raw) -> None:
    features = shipment_features(to_tables(raw)).to_pandas().set_index(["shipment_id", "event_ts"])
    s4 = features.loc["s4"].iloc[0]
    # To DE-N by day 50: s1 on time (known day 2) and s2 late (known at its promise, day 8),
    # both older than 28 days but within 90; FR's lost s3 is another region.
    assert s4["destination_outcomes_28d"] == 0
    assert np.isnan(s4["destination_late_rate_28d"])
    assert s4["destination_outcomes_90d"] == 2
    assert s4["destination_late_rate_90d"] == 0.5
    # At s2's dispatch (day 5) only s1's outcome was known.
    s2 = features.loc["s2"].iloc[0]
    assert (s2["destination_outcomes_90d"], s2["destination_late_rate_90d"]) == (1, 0.0)


def test_warehouse_backlog_counts_orders_waiting(raw) -> None:
    features = shipment_features(to_tables(raw)).to_pandas().set_index(["shipment_id", "event_ts"])
    # At s1's dispatch, o1 itself is still waiting (placed, not yet shipped).
    assert features.loc["s1"]["warehouse_backlog"].iloc[0] == 1


def test_offer_context(raw) -> None:
    tables = to_tables(raw)
    affinity = (
        customer_category_features(tables)
        .to_pandas()
        .set_index(["customer_id", "category"])
        .sort_index()
    )
    fashion = affinity.loc[("a", "fashion")].sort_values("event_ts")
    assert list(fashion["category_orders_total"]) == [1, 2, 2]
    assert list(fashion["category_returns_total"]) == [0, 0, 1]
    rows = order_features(tables).to_pandas()
    orders = rows.drop_duplicates("order_id").set_index("order_id")
    assert orders.loc["o1", "order_categories"] == "books|fashion"
    assert orders.loc["o1", "order_main_category"] == "fashion"
    assert orders.loc["o4", "order_items"] == 2
    assert orders.loc["o1", "order_customer_id"] == "a"
    # The parcel's state joins the order's row only when it happens: a row at dispatch
    # carries the promise, a row at delivery the delivery; nothing earlier knows either.
    ships = raw["shipments"].set_index("order_id")
    for order_id, parcel in rows.groupby("order_id"):
        ship = ships.loc[order_id] if order_id in ships.index else None
        at_order = parcel.iloc[0]
        assert np.isnan(at_order["order_promised_epoch"])
        assert np.isnan(at_order["order_delivered_epoch"])
        if ship is None or pd.isna(ship["shipped_ts"]):
            assert len(parcel) == 1
            continue
        dispatched = parcel[parcel["event_ts"] == ship["shipped_ts"]].iloc[0]
        assert dispatched["order_promised_epoch"] == ship["promised_ts"].timestamp()
        assert np.isnan(dispatched["order_delivered_epoch"])
        delivered = parcel[parcel["order_delivered_epoch"].notna()]
        if pd.isna(ship["delivered_ts"]):
            assert delivered.empty
        else:
            assert list(delivered["event_ts"]) == [ship["delivered_ts"]]
            assert delivered["order_delivered_epoch"].iloc[0] == ship["delivered_ts"].timestamp()


def test_missing_optional_tables_give_missing_features(raw) -> None:
    only = to_tables({k: raw[k] for k in ("customers", "orders")})
    features = customer_features(only).to_pandas()
    assert "contacts_total" not in features
    assert features["orders_total"].max() == 3
    assert shipment_features(only) is None
    assert customer_category_features(only) is None


def naive_last_order(raw: dict[str, pd.DataFrame], customer: str, at: datetime) -> dict:
    """The latest order before `at` and what was known of it then, from the raw rows."""
    orders = raw["orders"][raw["orders"]["customer_id"] == customer]
    before = orders[orders["order_ts"] < at].sort_values("order_ts")
    if before.empty:
        return {}
    last = before.iloc[-1]
    shipments = raw["shipments"][raw["shipments"]["order_id"] == last["order_id"]]
    contacts = raw["contacts"][raw["contacts"]["order_id"] == last["order_id"]]
    contacts = contacts[contacts["ts"] < at]
    returns = raw["returns"][raw["returns"]["order_id"] == last["order_id"]]
    instants = [last["order_ts"], *contacts["ts"]]
    known = late = delivered = 0
    days_late = 0.0
    for row in shipments.itertuples():
        is_late = pd.isna(row.delivered_ts) or row.delivered_ts > row.promised_ts
        if (row.promised_ts if is_late else row.delivered_ts) < at:
            known, late = known + 1, late + int(is_late)
            instants.append(row.promised_ts if is_late else row.delivered_ts)
        if not pd.isna(row.delivered_ts) and row.delivered_ts < at:
            delivered += 1
            days_late += max((row.delivered_ts - row.promised_ts) / timedelta(days=1), 0.0)
            instants.append(row.delivered_ts)
    long_refund = 0
    for row in returns.itertuples():
        if row.requested_ts >= at:
            continue
        instants.append(row.requested_ts)
        # A refund slower than 14 days (or none by then) is known once it is settled or late.
        deadline = row.requested_ts + timedelta(days=14)
        slow = pd.isna(row.refunded_ts) or row.refunded_ts > deadline
        settled = deadline if slow else row.refunded_ts
        if settled < at:
            instants.append(settled)
            long_refund += int(slow)
    return {
        "last_order_outcome_known": known,
        "last_order_late": late,
        "last_order_delivered": delivered,
        "last_order_days_late": days_late,
        "last_order_contacts": len(contacts),
        "last_order_unresolved": int((~contacts["resolved_first_contact"]).sum()),
        "last_order_complaint": int((contacts["reason"] == "complaint").sum()),
        "last_order_high_effort": int((contacts["ces"] >= 5).sum()),
        "last_order_returns": int((returns["requested_ts"] < at).sum()),
        "last_order_long_refund": long_refund,
        "last_experience_epoch": max(pd.Timestamp(i).timestamp() for i in instants),
    }


def test_last_order_experience_matches_naive_as_of(raw) -> None:
    features = customer_features(to_tables(raw)).to_pandas()
    checked = 0
    for row in features.itertuples():
        expected = naive_last_order(raw, row.customer_id, row.event_ts.to_pydatetime())
        for name, value in expected.items():
            assert getattr(row, name) == pytest.approx(value), (row.customer_id, row.event_ts)
            checked += 1
    assert checked > 100


def test_last_order_experience_changes_at_its_events_and_resets_at_the_next_order(raw) -> None:
    features = customer_features(to_tables(raw)).to_pandas()
    a = features[features["customer_id"] == "a"].set_index("event_ts").sort_index()

    def as_of(at: datetime) -> pd.Series:
        return a.loc[: pd.Timestamp(at)].iloc[-1]

    # o2's parcel is known late once its promise (day 8, 23:00) passes undelivered.
    promise = ts(8, 23)
    assert as_of(promise)["last_order_late"] == 0
    assert as_of(promise + timedelta(seconds=1))["last_order_late"] == 1
    # The unresolved, high-effort contact on o2 (day 9, noon) counts from the next second.
    assert as_of(ts(9))["last_order_unresolved"] == 0
    assert as_of(ts(9) + timedelta(seconds=1))["last_order_unresolved"] == 1
    assert as_of(ts(9) + timedelta(seconds=1))["last_order_high_effort"] == 1
    # Delivered on day 11 at noon: 2.54 days after the promise.
    assert as_of(ts(11) + timedelta(seconds=1))["last_order_days_late"] == pytest.approx(
        (ts(11) - promise) / timedelta(days=1)
    )
    # The next order (o4, day 50) starts a clean slate; its clock starts at the order.
    before, after = as_of(ts(50)), as_of(ts(50) + timedelta(seconds=1))
    assert (before["last_order_late"], before["last_order_complaint"]) == (1, 1)
    assert (after["last_order_late"], after["last_order_complaint"]) == (0, 0)
    assert before["last_experience_epoch"] == ts(20).timestamp()  # o2's refund
    assert after["last_experience_epoch"] == ts(50).timestamp()


def test_repurchase_estimate_weighs_the_silence_against_the_rate() -> None:
    day = 86_400.0
    now = 300 * day
    frame = pd.DataFrame(
        {
            "orders_total": [0, 1, 1, 5, 2],
            "first_order_epoch": [np.nan, now, now - 200 * day, now - 160 * day, now - 160 * day],
            "last_order_epoch": [np.nan, now, now - 200 * day, now - 60 * day, now - 60 * day],
            "last_experience_epoch": [np.nan, now, now - 200 * day, now - 60 * day, now - 60 * day],
        }
    )
    out = add_time_features(frame, pd.Timestamp(now, unit="s", tz="UTC"))
    alive, repurchase = out["p_alive_estimate"], out["p_repurchase_90d_estimate"]
    # Never ordered: no estimate.
    assert np.isnan(alive.iloc[0])
    assert np.isnan(repurchase.iloc[0])
    # Just ordered: only the chance of leaving after the order, and the prior rate (two
    # orders over 150 days) for the next 90 days.
    assert alive.iloc[1] == pytest.approx(0.7)
    assert repurchase.iloc[1] == pytest.approx(0.7 * (1 - (150 / 240) ** 2))
    # A long silence makes leaving likelier, and more so for a frequent buyer.
    assert alive.iloc[2] < alive.iloc[1]
    assert alive.iloc[3] < alive.iloc[4]


def test_repurchase_estimate_sees_no_order_from_the_decision_on(raw) -> None:
    # Customer a's estimate at day 50 noon (the instant of o4) is the same without o4 and
    # every later order: a decision reads only what happened before it.
    decision = pd.Timestamp(ts(50))
    earlier = {**raw, "orders": raw["orders"][raw["orders"]["order_ts"] < decision]}

    def estimate(frames: dict[str, pd.DataFrame]) -> pd.Series:
        rows = customer_features(to_tables(frames)).to_pandas()
        rows = rows[(rows["customer_id"] == "a") & (rows["event_ts"] <= decision)]
        latest = rows.sort_values("event_ts").tail(1)
        out = add_time_features(latest, decision)
        return out[["p_alive_estimate", "p_repurchase_90d_estimate"]].iloc[0]

    full, cut = estimate(raw), estimate(earlier)
    assert full["p_alive_estimate"] == pytest.approx(cut["p_alive_estimate"])
    assert full["p_repurchase_90d_estimate"] == pytest.approx(cut["p_repurchase_90d_estimate"])
    assert 0 < full["p_repurchase_90d_estimate"] < full["p_alive_estimate"] < 1


def test_silence_over_gap_divides_recency_by_the_mean_gap() -> None:
    day = 86_400.0
    frame = pd.DataFrame(
        {
            "orders_total": [1, 3],
            "first_order_epoch": [0.0, 0.0],
            "last_order_epoch": [0.0, 40 * day],
        }
    )
    out = add_time_features(frame, pd.Timestamp(100 * day, unit="s", tz="UTC"))
    assert np.isnan(out["silence_over_gap"].iloc[0])
    # Two gaps over 40 days: 20 days each; 60 days of silence is three gaps.
    assert out["silence_over_gap"].iloc[1] == pytest.approx(3.0)


# The expected transit of a parcel is a least-squares fit on the parcels delivered before
# the row's day only, equal to an independent fit on hand-made data.
TRANSIT_START = datetime(2024, 1, 1, tzinfo=UTC)
PARCELS = 600
CARRIERS = ("fast", "slow")


def history(seed: int = 3) -> dict[str, pd.DataFrame]:
    """Parcels of two carriers over 400 days, the last one dispatched on day 400; transit
    grows with distance and weight, and two parcels are lost."""
    rng = np.random.default_rng(seed)
    days = np.sort(rng.uniform(0, 399, PARCELS))
    shipped = [TRANSIT_START + timedelta(days=float(d)) for d in days]
    shipped.append(TRANSIT_START + timedelta(days=400, hours=15))
    n = len(shipped)
    carrier = rng.choice(CARRIERS, n)
    distance = np.round(rng.uniform(50, 1500, n), 1)
    products = rng.integers(0, 3, n)
    weight_g = np.array([400.0, 2500.0, 9000.0])[products]
    log_hours = (
        np.log(np.where(carrier == "fast", 20.0, 40.0))
        + 0.3 * distance / 1000
        + 0.02 * weight_g / 1000
        + 0.3 * rng.standard_normal(n)
    )
    delivered = [
        s + timedelta(hours=float(np.exp(h))) for s, h in zip(shipped, log_hours, strict=True)
    ]
    delivered[5] = delivered[9] = None
    ids = [f"s{i}" for i in range(n)]
    orders = [f"o{i}" for i in range(n)]
    return {
        "orders": pd.DataFrame(
            {
                "order_id": orders,
                "customer_id": ["c"] * n,
                "order_ts": [s - timedelta(hours=6) for s in shipped],
                "amount": [20.0] * n,
                "payment_method": ["card"] * n,
            }
        ),
        "products": pd.DataFrame(
            {
                "product_id": ["p0", "p1", "p2"],
                "category": ["books"] * 3,
                "price": [10.0] * 3,
                "margin": [0.2] * 3,
                "weight_g": [400.0, 2500.0, 9000.0],
            }
        ),
        "order_items": pd.DataFrame(
            {
                "order_id": orders,
                "product_id": [f"p{p}" for p in products],
                "qty": [1] * n,
                "unit_price": [10.0] * n,
            }
        ),
        "shipments": pd.DataFrame(
            {
                "shipment_id": ids,
                "order_id": orders,
                "carrier": carrier,
                "service_level": ["standard"] * n,
                "origin_region": ["DE"] * n,
                "destination_region": ["FR"] * n,
                "distance_km": distance,
                "shipped_ts": shipped,
                "promised_ts": [s + timedelta(days=2) for s in shipped],
                "delivered_ts": delivered,
            }
        ),
    }


def independent_fit(raw: dict[str, pd.DataFrame], row: pd.Series) -> tuple[float, float, float]:
    """Expected log transit hours, spread and slack of a dispatch row, by a least-squares fit
    with one dummy per (carrier, level, weekday) on the parcels delivered in the
    `TRANSIT_FIT_DAYS` days before the row's day."""
    ships = raw["shipments"].copy()
    weights = raw["products"].set_index("product_id")["weight_g"]
    ships["weight_kg"] = raw["order_items"]["product_id"].map(weights).to_numpy() / 1000
    day = pd.Timestamp(row["event_ts"]).floor("D")
    delivered = pd.to_datetime(ships["delivered_ts"], utc=True)
    ships["cell"] = (
        ships["carrier"]
        + "|"
        + ships["service_level"]
        + "|"
        + pd.to_datetime(ships["shipped_ts"], utc=True).dt.weekday.astype(str)
    )
    known = (delivered < day) & (delivered >= day - pd.Timedelta(days=TRANSIT_FIT_DAYS))
    train = ships[known]
    hours = (delivered[known] - pd.to_datetime(train["shipped_ts"], utc=True)).dt.total_seconds()
    y = np.log(hours.to_numpy() / 3600)
    cells = sorted(train["cell"].unique())
    design = np.column_stack(
        [(train["cell"] == c).to_numpy(float) for c in cells]
        + [train["distance_km"].to_numpy() / 1000, train["weight_kg"].to_numpy()]
    )
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    target = ships.set_index("shipment_id").loc[row["shipment_id"]]
    assert (train["cell"] == target["cell"]).sum() >= TRANSIT_MIN_DELIVERIES
    expected = (
        beta[cells.index(target["cell"])]
        + beta[-2] * target["distance_km"] / 1000
        + beta[-1] * target["weight_kg"]
    )
    residual = y - design @ beta
    own = train["carrier"].eq(target["carrier"]).to_numpy()
    own_cells = train.loc[own, "cell"].nunique()
    spread = np.sqrt((residual[own] ** 2).sum() / (own.sum() - own_cells))
    promise_h = (target["promised_ts"] - target["shipped_ts"]).total_seconds() / 3600
    return expected, spread, (np.log(promise_h) - expected) / spread


def last_dispatch(raw: dict[str, pd.DataFrame]) -> pd.Series:
    features = shipment_features(to_tables(raw)).to_pandas()
    last = raw["shipments"]["shipment_id"].iloc[-1]
    return features[(features["shipment_id"] == last) & (features["stage"] == "dispatch")].iloc[0]


def test_expected_transit_equals_an_independent_fit_on_earlier_deliveries() -> None:
    raw = history()
    row = last_dispatch(raw)
    expected, spread, slack = independent_fit(raw, row)
    assert row["expected_log_transit_hours"] == pytest.approx(expected, rel=1e-9)
    assert row["transit_log_spread"] == pytest.approx(spread, rel=1e-9)
    assert row["promise_slack_spreads"] == pytest.approx(slack, rel=1e-9)
    # Near the log transit the parcel was drawn around.
    target = raw["shipments"].iloc[-1]
    weight_kg = (
        raw["products"].set_index("product_id")["weight_g"][
            raw["order_items"]["product_id"].iloc[-1]
        ]
        / 1000
    )
    drawn = (
        np.log(20.0 if target["carrier"] == "fast" else 40.0)
        + 0.3 * target["distance_km"] / 1000
        + 0.02 * weight_kg
    )
    assert expected == pytest.approx(drawn, abs=0.1)


@pytest.mark.parametrize(
    ("unchanged", "moved"),
    [
        (
            ["expected_log_transit_hours", "transit_log_spread", "promise_slack_spreads"],
            "expected_log_transit_hours",
        ),
        (
            [f"destination_log_transit_{DESTINATION_TRANSIT_DAYS}d"],
            f"destination_log_transit_{DESTINATION_TRANSIT_DAYS}d",
        ),
    ],
)
def test_transit_levels_ignore_deliveries_from_the_rows_day_on(unchanged, moved) -> None:
    """The year's transit fit and the destination's recent level: parcels delivered on the
    row's day or later taking ten times as long change nothing; the earlier ones, slowed
    alike, move the level by about log(10)."""
    raw = history()
    before = last_dispatch(raw)
    ships = raw["shipments"]
    day = pd.Timestamp(before["event_ts"]).floor("D")
    later = pd.to_datetime(ships["delivered_ts"], utc=True) >= day
    assert later.sum() > 0
    slowed = ships["shipped_ts"] + 10 * (ships["delivered_ts"] - ships["shipped_ts"])
    raw["shipments"] = ships.assign(delivered_ts=ships["delivered_ts"].where(~later, slowed))
    assert last_dispatch(raw)[unchanged].to_dict() == before[unchanged].to_dict()
    # Slowing the earlier parcels moves the level (some now land after the row's day).
    raw["shipments"] = ships.assign(delivered_ts=ships["delivered_ts"].where(later, slowed))
    assert last_dispatch(raw)[moved] == pytest.approx(before[moved] + np.log(10), abs=0.5)


def test_a_cell_with_too_few_deliveries_has_no_expected_transit() -> None:
    raw = history()
    ships = raw["shipments"]
    # The last parcel goes by a carrier nobody used before.
    raw["shipments"] = ships.assign(carrier=[*ships["carrier"].iloc[:-1], "new"])
    row = last_dispatch(raw)
    assert np.isnan(row["expected_log_transit_hours"])
    assert np.isnan(row["transit_log_spread"])
    assert np.isnan(row["promise_slack_spreads"])


def test_destination_transit_is_the_mean_of_its_earlier_quarters_deliveries() -> None:
    raw = history()
    ships = raw["shipments"]
    # A second destination whose parcels take four times as long: each region has its own.
    far = np.arange(len(ships)) % 3 == 0
    shipped = pd.to_datetime(ships["shipped_ts"], utc=True)
    delivered = pd.to_datetime(ships["delivered_ts"], utc=True)
    delivered = delivered.where(~far, shipped + 4 * (delivered - shipped))
    raw["shipments"] = ships.assign(
        destination_region=np.where(far, "ES", "FR"), delivered_ts=delivered
    )
    features = shipment_features(to_tables(raw)).to_pandas()
    rows = features[features["stage"] == "dispatch"].set_index("shipment_id")
    column = f"destination_log_transit_{DESTINATION_TRANSIT_DAYS}d"
    for sid in ("s100", "s250", raw["shipments"]["shipment_id"].iloc[-1]):
        target = raw["shipments"].set_index("shipment_id").loc[sid]
        day = pd.Timestamp(rows.loc[sid, "event_ts"]).floor("D")
        known = (
            (delivered < day)
            & (delivered >= day - pd.Timedelta(days=DESTINATION_TRANSIT_DAYS))
            & (raw["shipments"]["destination_region"] == target["destination_region"])
        )
        hours = (delivered[known] - shipped[known]).dt.total_seconds() / 3600
        if known.sum() >= TRANSIT_MIN_DELIVERIES:
            assert rows.loc[sid, column] == pytest.approx(np.log(hours).mean(), rel=1e-9)
        else:
            assert np.isnan(rows.loc[sid, column])
    last = rows.loc[raw["shipments"]["shipment_id"].iloc[-1]]
    assert not np.isnan(last[column])


def test_a_destination_with_too_few_recent_deliveries_has_no_transit_level() -> None:
    raw = history()
    ships = raw["shipments"]
    raw["shipments"] = ships.assign(destination_region=[*ships["destination_region"][:-1], "IT"])
    assert np.isnan(last_dispatch(raw)[f"destination_log_transit_{DESTINATION_TRANSIT_DAYS}d"])


def as_of_demand(orders: pd.DataFrame, instant: pd.Timestamp) -> float:
    """Orders placed per day in the `DEMAND_DAYS` whole days before the instant's day, the
    shorter window's over the longer's (NaN without orders in the longer)."""
    day = instant.floor("D")
    placed = pd.to_datetime(orders["order_ts"], utc=True)
    short_days, long_days = DEMAND_DAYS

    def per_day(days: int) -> float:
        return ((placed >= day - pd.Timedelta(days=days)) & (placed < day)).sum() / days

    usual = per_day(long_days)
    return per_day(short_days) / usual if usual > 0 else float("nan")


def test_shop_demand_equals_an_as_of_count_of_earlier_days_orders() -> None:
    raw = history()
    # More orders than parcels, some on the rows' days: a burst in the last week.
    extra = pd.DataFrame(
        {
            "order_id": [f"x{i}" for i in range(40)],
            "customer_id": ["c"] * 40,
            "order_ts": [TRANSIT_START + timedelta(days=393 + i / 6) for i in range(40)],
            "amount": [20.0] * 40,
            "payment_method": ["card"] * 40,
        }
    )
    raw["orders"] = pd.concat([raw["orders"], extra], ignore_index=True)
    features = shipment_features(to_tables(raw)).to_pandas()
    column = "orders_{}d_over_{}d".format(*DEMAND_DAYS)
    expected = [as_of_demand(raw["orders"], pd.Timestamp(t)) for t in features["event_ts"]]
    np.testing.assert_allclose(features[column].to_numpy(), expected, rtol=1e-12)
    last = last_dispatch(raw)
    assert last[column] > 2.0  # the burst
    assert np.isnan(features[column].iloc[0])  # nothing was ordered before the first day


def test_shop_demand_ignores_orders_from_the_rows_day_on() -> None:
    raw = history()
    before = last_dispatch(raw)
    column = "orders_{}d_over_{}d".format(*DEMAND_DAYS)
    day = pd.Timestamp(before["event_ts"]).floor("D")
    burst = pd.DataFrame(
        {
            "order_id": [f"x{i}" for i in range(30)],
            "customer_id": ["c"] * 30,
            # Early on the row's day (before its instant) and after it.
            "order_ts": [day + timedelta(hours=i % 2 * 30 + 1) for i in range(30)],
            "amount": [20.0] * 30,
            "payment_method": ["card"] * 30,
        }
    )
    orders = raw["orders"]
    raw["orders"] = pd.concat([orders, burst], ignore_index=True)
    assert last_dispatch(raw)[column] == before[column]
    # The same orders a day earlier are counted.
    moved = burst.assign(order_ts=burst["order_ts"] - timedelta(days=1))
    raw["orders"] = pd.concat([orders, moved], ignore_index=True)
    assert last_dispatch(raw)[column] > before[column]
