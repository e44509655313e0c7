"""Customer outcomes against values worked out by hand on the hand-made shop (data end
2025-06-30 12:00)."""

from __future__ import annotations

import pandas as pd
import pytest

from features.instants import watermark
from features.report.contact_centre import ALL
from features.report.outcomes import (
    CONTACTED,
    FRICTION,
    NOT_CONTACTED,
    SMOOTH,
    churn_by_reason,
    first_order_cohorts,
    next_order_ts,
    repeat_purchase,
)


@pytest.fixture
def frames(shop) -> dict[str, pd.DataFrame]:
    return {name: table.to_pandas() for name, table in shop.items()}


@pytest.fixture
def data_end(shop) -> pd.Timestamp:
    return watermark(shop, happened=True)


def test_next_order_is_strictly_later_and_per_customer(frames) -> None:
    queries = pd.Series(["c1", "c1", "c2"])
    instants = pd.Series(
        pd.to_datetime(["2024-01-10 12:00", "2024-02-01 12:00", "2024-01-01 00:00"])
    )
    found = next_order_ts(queries, instants, frames["orders"])
    assert str(found.iloc[0].date()) == "2024-02-01"
    assert pd.isna(found.iloc[1])
    assert str(found.iloc[2].date()) == "2024-01-15"


def test_repeat_purchase_of_contacted_and_not_contacted_orders(frames, data_end) -> None:
    frame = repeat_purchase(frames["orders"], frames["contacts"], data_end).set_index("group")
    # Every order's 90 days ended by 2025-06-30. Only o1 and o7 are followed by an order
    # within 90 days. Contacted: o1, o3, o5, o6 by name, o4 by ct3 (names no order).
    assert frame.loc[CONTACTED, "orders"] == 5
    assert frame.loc[CONTACTED, "customers"] == 4
    assert frame.loc[CONTACTED, "repeat_rate"] == pytest.approx(1 / 5)
    assert frame.loc[NOT_CONTACTED, "orders"] == 3
    assert frame.loc[NOT_CONTACTED, "repeat_rate"] == pytest.approx(1 / 3)
    assert frame.loc[ALL, "repeat_rate"] == pytest.approx(2 / 8)
    assert str(frame.loc[ALL, "first_ts"].date()) == "2024-01-10"
    assert frame.loc[ALL, "last_ts"] <= data_end


def test_an_order_whose_window_has_not_ended_is_left_out(frames) -> None:
    early_end = pd.Timestamp("2024-12-31", tz="UTC")
    frame = repeat_purchase(frames["orders"], frames["contacts"], early_end).set_index("group")
    # o6 (2024-12-20) has not had its 90 days.
    assert frame.loc[ALL, "orders"] == 7


def test_churn_by_reason(frames, data_end) -> None:
    frame = churn_by_reason(frames["orders"], frames["contacts"], data_end).set_index("reason")
    # ct1 is followed by o2 after 20 days; ct2 and ct4 by nothing; ct3 by o5 after 144 days;
    # ct5's 90 days have not ended.
    assert list(frame.index) == ["billing_dispute", "delivery_delay", ALL]
    assert frame.loc["delivery_delay", "contacts"] == 3
    assert frame.loc["delivery_delay", "churn_rate"] == pytest.approx(2 / 3)
    assert frame.loc["billing_dispute", "churn_rate"] == pytest.approx(1.0)
    assert frame.loc[ALL, "churn_rate"] == pytest.approx(3 / 4)


def test_first_order_cohorts(frames, data_end) -> None:
    frame = first_order_cohorts(
        frames["orders"], frames["shipments"], frames["contacts"], data_end
    ).set_index("cohort")
    # c4's first order is too recent. c1's parcel was late; c2's contact was transferred
    # and unresolved; c3's contact names no order, so c3 and c5 had a smooth first order.
    assert frame.loc[FRICTION, "customers"] == 2
    assert frame.loc[FRICTION, "mean_revenue"] == pytest.approx((50 + 0) / 2)
    assert frame.loc[FRICTION, "repeat_rate"] == pytest.approx(1 / 2)
    assert frame.loc[FRICTION, "late_delivery"] == 1
    assert frame.loc[FRICTION, "transferred"] == 1
    assert frame.loc[FRICTION, "unresolved"] == 1
    assert frame.loc[SMOOTH, "customers"] == 2
    assert frame.loc[SMOOTH, "mean_revenue"] == pytest.approx((40 + 70) / 2)
    assert frame.loc[SMOOTH, "repeat_rate"] == pytest.approx(1.0)
    assert frame.loc[ALL, "customers"] == 4


def test_outcomes_without_contacts_or_shipments(frames, data_end) -> None:
    no_contacts = frames["contacts"].head(0)
    repeat = repeat_purchase(frames["orders"], no_contacts, data_end).set_index("group")
    assert repeat.loc[CONTACTED, "orders"] == 0
    assert repeat.loc[NOT_CONTACTED, "orders"] == 8
    assert churn_by_reason(frames["orders"], no_contacts, data_end).empty
    cohorts = first_order_cohorts(
        frames["orders"], frames["shipments"].head(0), no_contacts, data_end
    ).set_index("cohort")
    assert cohorts.loc[SMOOTH, "customers"] == 4
