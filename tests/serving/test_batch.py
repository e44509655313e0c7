"""The daily queue's proactive moments, on tiny hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from models.policies import outreach
from serving.batch import best_effects, moments, renewals_due

AS_OF = pd.Timestamp("2025-06-01 12:00", tz="UTC")


def _ts(days: float | None) -> pd.Timestamp | None:
    return None if days is None else AS_OF + pd.Timedelta(days=days)


def _tables() -> dict[str, pa.Table]:
    # (invoice, customer, kind, issued, due, paid), days from AS_OF.
    rows = [
        ("i1", "c1", "membership", -400, -386, -390),  # c1's first year, paid
        ("i2", "c1", "membership", -11, 3, None),  # renewal due in 3 days: proposed
        ("i3", "c2", "membership", -400, -386, -395),
        ("i4", "c2", "membership", 16, 30, None),  # due in 30 days: not yet
        ("i5", "c3", "membership", -400, -386, -395),
        ("i6", "c3", "membership", -11, 3, -2),  # already paid
        ("i7", "c4", "membership", -400, -386, -395),
        ("i8", "c4", "membership", -20, -6, None),  # overdue: a payment reminder's business
        ("i9", "c5", "membership", -11, 3, None),  # c5's first year: joined, not a renewal
        ("i10", "c6", "order", -11, 3, None),  # a pay-later order invoice
    ]
    invoices = pd.DataFrame(
        {
            "invoice_id": [row[0] for row in rows],
            "customer_id": [row[1] for row in rows],
            "order_id": [None] * len(rows),
            "kind": [row[2] for row in rows],
            "issued_ts": [_ts(row[3]) for row in rows],
            "due_date": [_ts(row[4]) for row in rows],
            "amount": 49.0,
            "paid_ts": pd.to_datetime([_ts(row[5]) for row in rows], utc=True),
        }
    )
    orders = pd.DataFrame(
        {
            "order_id": ["o1"],
            "customer_id": ["c1"],
            "order_ts": [AS_OF - pd.Timedelta(days=400)],
        }
    )
    return {
        "invoices": pa.Table.from_pandas(invoices, preserve_index=False),
        "orders": pa.Table.from_pandas(orders, preserve_index=False),
    }


def test_a_renewal_due_within_the_reminder_days_is_proposed_about_its_invoice() -> None:
    due = renewals_due(_tables(), AS_OF)
    assert due["invoice_id"].tolist() == ["i2"]
    proposed = moments(_tables(), AS_OF)[outreach.RENEWAL_REMINDER]
    assert proposed.to_dict("records") == [{"subject_id": "i2", "customer_id": "c1"}]


def test_renewal_reminders_become_candidates_at_the_customers_churn_risk() -> None:
    customers = pd.DataFrame(
        {"customer_id": ["c1", "c2"], "monetary_365d": [100.0, 50.0], "unresolved_contacts_90d": 0}
    )
    found = outreach.candidates(
        customers,
        churn_p=pd.Series([0.3, 0.6]).to_numpy(),
        shipments=pd.DataFrame(columns=["shipment_id", "customer_id"]),
        delay_p=pd.Series([], dtype=float).to_numpy(),
        lost=pd.Series([], dtype=bool).to_numpy(),
        due=pd.Series([], dtype=bool).to_numpy(),
        invoices=pd.DataFrame(columns=["invoice_id", "customer_id", "amount"]),
        moments=moments(_tables(), AS_OF),
    )
    renewal = found[found["action"] == outreach.RENEWAL_REMINDER]
    assert renewal["subject_id"].tolist() == ["i2"]
    assert renewal["risk"].tolist() == [0.3]


def test_no_invoices_table_means_no_renewal_moment() -> None:
    tables = _tables()
    del tables["invoices"]
    assert moments(tables, AS_OF)[outreach.RENEWAL_REMINDER].empty


def test_best_effects_are_each_customers_highest_positive_uplift_as_pandas_sorts_them() -> None:
    rng = np.random.default_rng(3)
    n = 5_000
    # Few distinct values: many ties, within and across customers; NaN for unscored ones.
    uplift = rng.choice([-0.02, 0.0, 0.01, 0.02, 0.03, np.nan], size=n)
    candidates = pd.DataFrame(
        {
            "customer_id": rng.choice([f"c{i}" for i in range(900)], size=n).astype(object),
            "action": rng.choice(["delay_notice", "nps_survey", "win_back"], size=n).astype(object),
            "subject_id": [f"s{i}" for i in range(n)],
            "uplift": uplift,
            "uplift_low": uplift - 0.01,
            "uplift_high": uplift + 0.01,
            "priority": rng.random(n),
        }
    )
    inputs = pd.DataFrame({"action": candidates["action"], "tenure": rng.random(n)})
    columns = ["customer_id", "action", "subject_id", "uplift", "uplift_low", "uplift_high"]
    helps = candidates[candidates["uplift"] > 0]
    best = helps.sort_values("uplift", ascending=False, kind="stable")
    best = best.drop_duplicates("customer_id")
    expected = pd.concat(
        [
            best[columns].reset_index(drop=True),
            inputs.iloc[best.index.to_numpy()][["tenure"]].reset_index(drop=True),
        ],
        axis=1,
    )
    got = best_effects(candidates, inputs, ["action", "tenure"])
    assert 0 < len(got) < candidates["customer_id"].nunique()
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(best_effects(candidates), expected[columns])
