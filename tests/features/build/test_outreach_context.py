"""What an outreach action is about, as of its decision: the subject order resolved through
its shipment, contact, invoice or order id (or the latest order, for a win-back), and that
order's experience counted strictly before the row's ts, on small hand-made tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.build.outreach_context import CONTEXT_FEATURES, outreach_context, subject_orders

UTC = pa.timestamp("us", tz="UTC")


def _t(text: str | None) -> pd.Timestamp | None:
    return None if text is None else pd.Timestamp(text, tz="UTC")


def _table(columns: dict[str, list], times: tuple[str, ...]) -> pa.Table:
    arrays = {
        name: pa.array([_t(v) for v in values], UTC) if name in times else pa.array(values)
        for name, values in columns.items()
    }
    return pa.table(arrays)


# Customer c1 ordered o1 (its first), o2 and o3; c2 ordered o4; c3 never ordered.
ORDERS = _table(
    {
        "order_id": ["o1", "o2", "o3", "o4"],
        "customer_id": ["c1", "c1", "c1", "c2"],
        "order_ts": ["2024-01-01", "2024-02-01", "2024-03-01", "2024-01-15"],
        "amount": [50.0, 80.0, 20.0, 30.0],
    },
    ("order_ts",),
)
# o1 delivered 48 h after its promise; o2 never delivered; o4 12 h early; o3 no parcel.
SHIPMENTS = _table(
    {
        "shipment_id": ["s1", "s2", "s4"],
        "order_id": ["o1", "o2", "o4"],
        "promised_ts": ["2024-01-04", "2024-02-05", "2024-01-20"],
        "delivered_ts": ["2024-01-06", None, "2024-01-19 12:00"],
    },
    ("promised_ts", "delivered_ts"),
)
TRACKING = _table(
    {
        "shipment_id": ["s1", "s1", "s1", "s2", "s2"],
        "event_type": ["in_transit", "exception", "exception", "exception", "exception"],
        "event_ts": [
            "2024-01-02",
            "2024-01-03",
            "2024-01-05",
            "2024-02-10",
            "2024-02-12",  # exactly the ts of row "recovery" below: not yet counted there
        ],
    },
    ("event_ts",),
)
CONTACTS = _table(
    {
        "contact_id": ["k1", "k2", "k3", "k4"],
        "order_id": ["o1", "o1", "o2", "o2"],
        "ts": ["2024-01-05", "2024-01-07", "2024-02-12", "2024-02-08"],
        "reason": ["complaint", "delivery", "complaint", "other"],
        # A missing flag counts as resolved.
        "resolved_first_contact": [False, True, False, None],
    },
    ("ts",),
)
RETURNS = _table(
    {
        "order_id": ["o1", "o1", "o2"],
        "requested_ts": ["2024-01-08", "2024-01-20", "2024-02-12"],
        "reason": ["damaged", "changed_mind", "damaged"],
    },
    ("requested_ts",),
)
INVOICES = pa.table({"invoice_id": ["i1", "i2", "i4"], "order_id": ["o1", "o2", "o4"]})
TABLES = {
    "orders": ORDERS,
    "shipments": SHIPMENTS,
    "tracking_events": TRACKING,
    "contacts": CONTACTS,
    "returns": RETURNS,
    "invoices": INVOICES,
}

# name: customer, action, subject_id, ts
CASES = {
    "at_delivery": ("c1", "delay_notice", "s1", "2024-01-06"),
    "after_delivery": ("c1", "delay_notice", "s1", "2024-01-10"),
    "recovery": ("c1", "service_recovery_call", "k3", "2024-02-12"),
    "reminder": ("c1", "payment_reminder", "i2", "2024-02-13"),
    "reminder_o1": ("c1", "payment_reminder", "i1", "2024-02-13"),
    "not_allowed": ("c1", "delay_notice", "i1", "2024-02-13"),
    "winback_at_o3": ("c1", "winback_offer", None, "2024-03-01"),
    "winback_after_o3": ("c1", "winback_offer", None, "2024-03-02"),
    "onboarding": ("c1", "onboarding_followup", "o1", "2024-01-02"),
    "future_order": ("c1", "onboarding_followup", "o3", "2024-02-15"),
    "check_order": ("c2", "satisfaction_check", "o4", "2024-01-25"),
    "check_parcel": ("c2", "satisfaction_check", "s4", "2024-01-25"),
    "no_orders": ("c3", "winback_offer", None, "2024-05-01"),
}


def _rows(names: list[str] | None = None) -> pd.DataFrame:
    names = names or list(CASES)
    rows = pd.DataFrame(
        [CASES[n] for n in names], columns=["customer_id", "action", "subject_id", "ts"]
    )
    rows["ts"] = pd.to_datetime(rows["ts"], utc=True)
    # An index of its own: the output keeps it.
    rows.index = pd.Index(names, name="case")
    return rows


def test_subject_orders_follow_each_actions_subject_tables() -> None:
    rows = _rows()
    got = dict(zip(rows.index, subject_orders(rows, TABLES), strict=True))
    assert got["at_delivery"] == "o1"  # shipment s1
    assert got["recovery"] == "o2"  # contact k3
    assert got["reminder"] == "o2"  # invoice i2
    assert got["reminder_o1"] == "o1"  # invoice i1
    assert got["onboarding"] == "o1"  # an order id names itself
    assert got["check_order"] == "o4"  # satisfaction check by order id
    assert got["check_parcel"] == "o4"  # … or by shipment id
    # A delay notice may not name an invoice: i1 is not followed to o1; the row falls back
    # to the customer's latest order before ts, o2.
    assert got["not_allowed"] == "o2"
    # A win-back is about the latest order strictly before ts: o3 placed exactly at ts is
    # not yet one, a day later it is.
    assert got["winback_at_o3"] == "o2"
    assert got["winback_after_o3"] == "o3"
    assert got["no_orders"] is None or pd.isna(got["no_orders"])


def test_context_counts_only_what_happened_strictly_before_ts() -> None:
    out = outreach_context(_rows(), TABLES)
    assert list(out.columns) == list(CONTEXT_FEATURES)
    assert list(out.index) == list(CASES)
    expected = {
        # At 2024-01-06 00:00, o1's parcel is delivered exactly then: not yet delivered, so
        # 48 h past its promise so far; exceptions on 01-03 and 01-05 (the in-transit scan
        # is no exception); contact k1 (complaint, unresolved); the return is on 01-08.
        "at_delivery": {
            "subject_order_amount": 50.0,
            "subject_order_age_days": 5.0,
            "subject_first_order": 1.0,
            "subject_delivered": 0.0,
            "subject_hours_past_promise": 48.0,
            "subject_exception_scans": 2.0,
            "subject_contacts": 1.0,
            "subject_unresolved_contacts": 1.0,
            "subject_complaints": 1.0,
            "subject_returns": 0.0,
            "subject_damaged_returns": 0.0,
        },
        # On 01-10: delivered 48 h late; contacts k1 and k2; the damaged return of 01-08.
        "after_delivery": {
            "subject_order_amount": 50.0,
            "subject_order_age_days": 9.0,
            "subject_first_order": 1.0,
            "subject_delivered": 1.0,
            "subject_hours_past_promise": 48.0,
            "subject_exception_scans": 2.0,
            "subject_contacts": 2.0,
            "subject_unresolved_contacts": 1.0,
            "subject_complaints": 1.0,
            "subject_returns": 1.0,
            "subject_damaged_returns": 1.0,
        },
        # At 02-12 00:00 about o2 (through contact k3, logged exactly then): undelivered,
        # 7 days = 168 h past its 02-05 promise; the exception of 02-10 only; contact k4
        # only (its missing flag: resolved; not a complaint); the return at ts not counted.
        "recovery": {
            "subject_order_amount": 80.0,
            "subject_order_age_days": 11.0,
            "subject_first_order": 0.0,
            "subject_delivered": 0.0,
            "subject_hours_past_promise": 168.0,
            "subject_exception_scans": 1.0,
            "subject_contacts": 1.0,
            "subject_unresolved_contacts": 0.0,
            "subject_complaints": 0.0,
            "subject_returns": 0.0,
            "subject_damaged_returns": 0.0,
        },
        # A day later, what happened at 02-12 counts: 192 h past the promise.
        "reminder": {
            "subject_order_amount": 80.0,
            "subject_order_age_days": 12.0,
            "subject_first_order": 0.0,
            "subject_delivered": 0.0,
            "subject_hours_past_promise": 192.0,
            "subject_exception_scans": 2.0,
            "subject_contacts": 2.0,
            "subject_unresolved_contacts": 1.0,
            "subject_complaints": 1.0,
            "subject_returns": 1.0,
            "subject_damaged_returns": 1.0,
        },
        # Win-back at 03-01 00:00: o2, 29 days old (2024 is a leap year), 25 days = 600 h
        # past its promise and still not delivered.
        "winback_at_o3": {
            "subject_order_amount": 80.0,
            "subject_order_age_days": 29.0,
            "subject_first_order": 0.0,
            "subject_delivered": 0.0,
            "subject_hours_past_promise": 600.0,
            "subject_exception_scans": 2.0,
            "subject_contacts": 2.0,
            "subject_unresolved_contacts": 1.0,
            "subject_complaints": 1.0,
            "subject_returns": 1.0,
            "subject_damaged_returns": 1.0,
        },
        # A day later, o3: no parcel (its parcel features missing), nothing about it yet.
        "winback_after_o3": {
            "subject_order_amount": 20.0,
            "subject_order_age_days": 1.0,
            "subject_first_order": 0.0,
            "subject_delivered": math.nan,
            "subject_hours_past_promise": math.nan,
            "subject_exception_scans": math.nan,
            "subject_contacts": 0.0,
            "subject_unresolved_contacts": 0.0,
            "subject_complaints": 0.0,
            "subject_returns": 0.0,
            "subject_damaged_returns": 0.0,
        },
        # A day after o1: 48 h before its promise; the in-transit scan is no exception.
        "onboarding": {
            "subject_order_amount": 50.0,
            "subject_order_age_days": 1.0,
            "subject_first_order": 1.0,
            "subject_delivered": 0.0,
            "subject_hours_past_promise": -48.0,
            "subject_exception_scans": 0.0,
            "subject_contacts": 0.0,
            "subject_unresolved_contacts": 0.0,
            "subject_complaints": 0.0,
            "subject_returns": 0.0,
            "subject_damaged_returns": 0.0,
        },
        # o4, delivered 12 h early, no scans, contacts or returns.
        "check_order": {
            "subject_order_amount": 30.0,
            "subject_order_age_days": 10.0,
            "subject_first_order": 1.0,
            "subject_delivered": 1.0,
            "subject_hours_past_promise": -12.0,
            "subject_exception_scans": 0.0,
            "subject_contacts": 0.0,
            "subject_unresolved_contacts": 0.0,
            "subject_complaints": 0.0,
            "subject_returns": 0.0,
            "subject_damaged_returns": 0.0,
        },
    }
    for case, values in expected.items():
        got = out.loc[case].to_dict()
        assert got == pytest.approx(values, nan_ok=True), case
    # The same order named through its shipment reads the same.
    pd.testing.assert_series_equal(
        out.loc["check_parcel"], out.loc["check_order"], check_names=False
    )
    # Through invoice i1 a reminder on 02-13 is about o1 (43 days old, delivered late).
    assert out.loc["reminder_o1", "subject_order_age_days"] == pytest.approx(43.0)
    assert out.loc["reminder_o1", "subject_delivered"] == 1.0
    # A delay notice naming an invoice reads its fallback, the latest order o2.
    pd.testing.assert_series_equal(out.loc["not_allowed"], out.loc["reminder"], check_names=False)


def test_no_known_order_leaves_every_feature_missing() -> None:
    out = outreach_context(_rows(["future_order", "no_orders"]), TABLES)
    # o3 is placed after the row's ts: not known then. c3 never ordered.
    assert out.isna().all().all()


def test_missing_optional_tables_leave_their_features_missing() -> None:
    rows = _rows(["after_delivery", "reminder"])
    only_orders = outreach_context(rows, {"orders": ORDERS})
    of_the_order = ["subject_order_amount", "subject_order_age_days", "subject_first_order"]
    parcel_and_after = [f for f in CONTEXT_FEATURES if f not in of_the_order]
    assert only_orders[parcel_and_after].isna().all().all()
    assert only_orders.loc["after_delivery", "subject_order_amount"] == 50.0
    # Without invoices, the reminder's i2 cannot be followed: the latest order before
    # 02-13 (o2) is its fallback; without shipments s1 neither, again the latest (o1).
    assert only_orders.loc["reminder", "subject_order_amount"] == 80.0
    assert only_orders.loc["after_delivery", "subject_first_order"] == 1.0

    with_contacts = outreach_context(rows, {"orders": ORDERS, "contacts": CONTACTS})
    assert with_contacts.loc["after_delivery", "subject_contacts"] == 2.0
    assert with_contacts.loc["reminder", "subject_unresolved_contacts"] == 1.0
    shipping = [
        "subject_delivered",
        "subject_hours_past_promise",
        "subject_exception_scans",
        "subject_returns",
        "subject_damaged_returns",
    ]
    assert with_contacts[shipping].isna().all().all()

    # Shipments without scans: delivery known, exception scans missing.
    no_scans = outreach_context(rows, {"orders": ORDERS, "shipments": SHIPMENTS})
    assert no_scans.loc["after_delivery", "subject_delivered"] == 1.0
    assert np.isnan(no_scans.loc["after_delivery", "subject_exception_scans"])

    # A table lacking a column the module reads counts as absent.
    bare = outreach_context(rows, {"orders": ORDERS, "returns": RETURNS.drop(["reason"])})
    assert bare["subject_returns"].isna().all()

    # Without orders nothing is known at all.
    assert outreach_context(rows, {"shipments": SHIPMENTS}).isna().all().all()


def test_no_rows_give_an_empty_frame() -> None:
    out = outreach_context(_rows()[:0], TABLES)
    assert out.empty
    assert list(out.columns) == list(CONTEXT_FEATURES)


@pytest.mark.parametrize("chunk_rows", [1, 2, 3])
def test_rows_taken_in_chunks_get_the_values_they_get_at_once(chunk_rows: int) -> None:
    rows = _rows()
    whole = outreach_context(rows, TABLES)
    # The chunks must not change a value: the rows' order, index and every feature.
    chunked = outreach_context(rows, TABLES, chunk_rows=chunk_rows)
    pd.testing.assert_frame_equal(chunked, whole)
    assert whole.notna().any().all()


@pytest.mark.parametrize("seed", range(3))
def test_counts_before_equal_a_join_of_each_row_to_its_events(seed) -> None:
    """Counts by ordered search equal those of joining every row to its key's events and
    keeping the earlier ones: missing keys and instants, ties at the row's instant,
    repeated rows and keys no row asks for."""
    from features.build.outreach_context import _counts_before

    rng = np.random.default_rng(seed)
    keys = np.array([f"k{i}" for i in range(30)] + [None], dtype=object)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    hours = rng.integers(0, 60, 400).astype(float)
    hours[rng.random(400) < 0.05] = np.nan
    rows = pd.DataFrame({"key": rng.choice(keys, 400), "_t": start.timestamp() + hours * 3600})
    times = pd.Series(start + pd.to_timedelta(rng.integers(0, 60, 2000), unit="h"))
    times[rng.random(2000) < 0.05] = pd.NaT
    events = pd.DataFrame({"key": rng.choice(keys, 2000), "at": times})
    flags = {
        "all": pd.Series(1, index=events.index),
        "odd": pd.Series(rng.integers(0, 2, 2000), index=events.index),
    }
    got = _counts_before(rows, events, "key", "at", flags)
    joined = (
        rows.reset_index(drop=True)
        .assign(_row=np.arange(len(rows)))
        .dropna(subset=["key"])
        .merge(
            events.assign(
                _e=(events["at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds(), **flags
            ),
            on="key",
        )
    )
    joined = joined[joined["_e"] < joined["_t"]]
    for name in flags:
        expected = joined.groupby("_row")[name].sum().reindex(range(len(rows))).fillna(0)
        np.testing.assert_array_equal(got[name], expected.to_numpy(dtype=np.float64))
    assert got["all"].sum() > 0
