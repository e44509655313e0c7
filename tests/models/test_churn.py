"""Churn labels from raw orders, on a hand-made example, its baseline and its report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract.schema import ORDERS
from models import MODELS
from models.churn import baseline, churn_by_contact_reason, label_events, snapshot_instants
from models.spec import Kind


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _orders(rows: list[tuple[str, str]]) -> dict[str, pa.Table]:
    frame = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(len(rows))],
            "customer_id": [c for c, _ in rows],
            "order_ts": [_ts(t) for _, t in rows],
            "amount": 10.0,
            "payment_method": "card",
        }
    )
    return {"orders": pa.Table.from_pandas(frame, schema=ORDERS.arrow_schema, preserve_index=False)}


def test_snapshot_instants_are_month_starts_whose_window_fits() -> None:
    got = snapshot_instants(_ts("2025-01-15 10:00"), _ts("2025-07-01"))
    assert got.tolist() == [_ts("2025-02-01"), _ts("2025-03-01"), _ts("2025-04-01")]


def test_label_events_match_a_hand_made_example() -> None:
    tables = _orders(
        [
            ("a", "2025-01-10"),  # a orders again in March: not churned at Feb 1
            ("a", "2025-03-20"),
            ("b", "2025-01-20"),  # b never again: churned at Feb 1, Mar 1, Apr 1
            ("c", "2025-02-01 00:00"),  # c's first order at the Feb 1 instant: not before it
            ("c", "2025-05-01"),
            ("z", "2025-07-01"),  # the data's end
        ]
    )
    got = label_events(tables).sort_values(["event_timestamp", "customer_id"])
    rows = {(r.customer_id, r.event_timestamp.strftime("%m-%d")): r.label for r in got.itertuples()}
    assert rows == {
        ("a", "02-01"): 0,
        ("b", "02-01"): 1,
        ("a", "03-01"): 0,
        ("b", "03-01"): 1,
        ("c", "03-01"): 0,  # orders on May 1 = Mar 1 + 61 days
        ("a", "04-01"): 1,  # Apr 1 + 90 days = Jun 30: no order
        ("b", "04-01"): 1,
        ("c", "04-01"): 0,
    }
    assert (got["label_ts"] == got["event_timestamp"] + pd.Timedelta(days=90)).all()


def test_baseline_ranks_silent_infrequent_customers_first() -> None:
    frame = pd.DataFrame({"days_since_last_order": [10.0, 200.0, 200.0], "orders_total": [5, 9, 1]})
    scores = baseline(frame)
    assert np.argsort(-scores).tolist() == [2, 1, 0]


def test_churn_rate_by_contact_reason_table() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "label": [1, 0, 1, 1],
            "last_contact_reason": ["complaint", "complaint", None, "billing_dispute"],
        }
    )
    scored = frame.assign(score=[0.9, 0.2, 0.5, 0.7])
    table = churn_by_contact_reason(frame, scored)["churn_by_contact_reason"]
    row = table.set_index("last_contact_reason").loc["complaint"]
    assert row["all_churn_rate"] == 0.5
    assert row["test_mean_score"] == 0.55
    assert "(missing)" in set(table["last_contact_reason"])


def test_reasons_of_equal_churn_rate_are_listed_by_name() -> None:
    """Forty reasons in two tied rates, given in a shuffled order: the higher rate first,
    and within each rate the reasons by name, whatever order the rows came in."""
    reasons = [f"reason_{i:02d}" for i in range(40)]
    rng = np.random.default_rng(3)
    rows = []
    for i, reason in enumerate(reasons):
        labels = [1, 1] if i % 2 else [1, 0]
        rows += [{"customer_id": f"{reason}-{k}", "label": y, "last_contact_reason": reason}
                 for k, y in enumerate(labels)]  # fmt: skip
    frame = pd.DataFrame(rows).iloc[rng.permutation(len(rows))].reset_index(drop=True)
    scored = frame.assign(score=0.5)
    table = churn_by_contact_reason(frame, scored)["churn_by_contact_reason"]
    expected = sorted(reasons[1::2]) + sorted(reasons[0::2])
    assert table["last_contact_reason"].tolist() == expected
    assert table["all_churn_rate"].tolist() == [1.0] * 20 + [0.5] * 20


def test_registry_holds_both_models() -> None:
    binary = {name for name, spec in MODELS.items() if spec.kind is Kind.BINARY}
    assert binary == {"delay_risk", "churn"}
    assert MODELS["churn"].segments == ("last_contact_reason",)
