"""Outreach uplift's second outcomes, from hand-made raw tables: "where is my order"
contacts after a delay notice and days to pay after a reminder, each only where it fits the
action and its window ended by the data's end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from models.outreach_uplift import second_outcomes
from models.spec import EVENT_TIME
from training.uplift import second_effects

SENT = pd.Timestamp("2025-03-01T10:00:00Z")
DAY = pd.Timedelta(days=1)


def _tables(end: pd.Timestamp) -> dict[str, pa.Table]:
    contacts = pd.DataFrame(
        {
            "contact_id": ["k1", "k2", "k3", "k4", "k5", "k6"],
            "customer_id": ["c1", "c1", "c1", "c1", "c1", "c2"],
            "ts": [
                SENT + 3 * DAY,  # counts: order status, within 14 days
                SENT + 5 * DAY,  # counts: delivery delay
                SENT + 20 * DAY,  # too late
                SENT - DAY,  # before the send
                SENT + 2 * DAY,  # a complaint: not asking where the order is
                SENT + 16 * DAY,  # c2's: too late
            ],
            "reason": [
                "order_status",
                "delivery_delay",
                "order_status",
                "order_status",
                "complaint",
                "order_status",
            ],
        }
    )
    invoices = pd.DataFrame(
        {
            "invoice_id": ["i1", "i2", "i3", "i4"],
            "customer_id": ["c3", "c3", "c3", "c3"],
            "due_date": [SENT - DAY] * 4,
            "paid_ts": [SENT + 5 * DAY, pd.NaT, SENT + 40 * DAY, SENT - 2 * DAY],
        }
    )
    orders = pd.DataFrame({"order_id": ["o1"], "customer_id": ["c1"], "order_ts": [end]})
    return {
        "contacts": pa.Table.from_pandas(contacts, preserve_index=False),
        "invoices": pa.Table.from_pandas(invoices, preserve_index=False),
        "orders": pa.Table.from_pandas(orders, preserve_index=False),
    }


def _rows(actions, subjects, customers, sent=SENT) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": customers,
            EVENT_TIME: sent,
            "action": actions,
            "subject_id": subjects,
        }
    )


def test_second_outcomes_by_hand() -> None:
    rows = _rows(
        ["delay_notice", "delay_notice", "winback_offer"]
        + ["payment_reminder"] * 4
        + ["renewal_reminder"],
        ["s1", "s2", None, "i1", "i2", "i3", "i4", "i-unknown"],
        ["c1", "c2", "c1", "c3", "c3", "c3", "c3", "c3"],
    )
    got = second_outcomes(rows, _tables(SENT + 60 * DAY))
    np.testing.assert_array_equal(
        got["wismo_contacts_14d"].to_numpy(),
        [2.0, 0.0] + [np.nan] * 6,
    )
    np.testing.assert_allclose(
        got["days_to_pay_30d"].to_numpy(),
        # i1 paid after 5 days; i2 unpaid and i3 paid after 40 days: the cap; i4 was paid
        # before the reminder and the unknown invoice has nothing to measure.
        [np.nan, np.nan, np.nan, 5.0, 30.0, 30.0, np.nan, np.nan],
    )


def test_an_outcome_whose_window_has_not_ended_is_missing() -> None:
    rows = _rows(["delay_notice", "payment_reminder"], ["s1", "i1"], ["c1", "c3"])
    # The data end 20 days after the send (the latest contact; i3's payment 40 days after
    # is left out): the 14-day window ended, the 30-day one not.
    tables = _tables(SENT + 20 * DAY)
    tables["invoices"] = tables["invoices"].slice(0, 1)
    got = second_outcomes(rows, tables)
    assert got["wismo_contacts_14d"].tolist()[0] == 2.0
    assert got["days_to_pay_30d"].isna().all()


def test_a_source_without_the_outcomes_table_leaves_it_missing() -> None:
    rows = _rows(["delay_notice", "payment_reminder"], ["s1", "i1"], ["c1", "c3"])
    tables = _tables(SENT + 60 * DAY)
    got = second_outcomes(rows, {"orders": tables["orders"]})
    assert got.isna().all().all()


def test_second_effects_are_the_sent_mean_less_the_held_out_mean() -> None:
    # Four delay notices: two sent (2 and 0 contacts), two held out (both 0 contacts, one
    # through c2's late contact); the effect is (2 + 0) / 2 − 0 = +1.
    rows = _rows(["delay_notice"] * 4, ["s1", "s2", "s3", "s4"], ["c1", "c2", "c2", "c2"])
    rows["treated"] = [True, True, False, False]
    effects = second_effects(rows, _tables(SENT + 60 * DAY))
    assert effects["outcome"].tolist() == ["wismo_contacts_14d"]
    row = effects.iloc[0]
    assert (row["sent"], row["held_out"]) == (2, 2)
    assert row["effect"] == pytest.approx(1.0)
    assert row["sent_mean"] == pytest.approx(1.0)
    assert row["held_out_mean"] == pytest.approx(0.0)
    # The held-out arm has no variance; the sent arm's sample variance is 2, so the
    # standard error is sqrt(2 / 2) = 1.
    assert row["high"] - row["effect"] == pytest.approx(1.6448536, rel=1e-6)
