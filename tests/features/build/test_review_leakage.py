"""Reviews exist only after delivery: scrambling every review field of the Olist source
changes no shipment feature (the delay model's inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build.shipments import shipment_features
from features.sources.olist import (
    COMPLAINT_REASONS,
    default_olist_path,
    olist_tables,
    read_olist_csv,
)

OLIST = default_olist_path()
REVIEW_COLUMNS = ("review_score", "review_answer_timestamp", "most_voted_subclass")


def orders(n: int, seed: int) -> pd.DataFrame:
    """Olist-shaped rows: purchases over a year, promises 1-4 weeks out, some late."""
    rng = np.random.default_rng(seed)
    bought = pd.Timestamp("2017-03-01") + pd.to_timedelta(rng.uniform(0, 365, n), unit="D")
    approved = bought + pd.to_timedelta(rng.uniform(0.1, 2, n), unit="D")
    promised = (approved + pd.to_timedelta(rng.integers(7, 30, n), unit="D")).normalize()
    delivered = approved + pd.to_timedelta(rng.uniform(2, 35, n), unit="D")
    text = "%Y-%m-%d %H:%M:%S.%f"
    return pd.DataFrame(
        {
            "id": [f"o{i}" for i in range(n)],
            "order_status": "delivered",
            "order_products_value": rng.uniform(10, 300, n),
            "order_freight_value": rng.uniform(0, 40, n),
            "order_purchase_timestamp": bought.strftime(text),
            "order_aproved_at": approved.strftime(text),
            "order_estimated_delivery_date": promised.strftime(text),
            "order_delivered_customer_date": delivered.strftime(text),
            "customer_state": rng.choice(["SP", "RJ", "MG", "BA"], n),
            "review_score": pd.array(rng.integers(1, 6, n), dtype="Int64"),
            "review_answer_timestamp": (delivered + pd.Timedelta(days=2)).strftime(
                "%Y-%m-%d %H:%M:%S+00:00"
            ),
            "most_voted_subclass": rng.choice([*COMPLAINT_REASONS, "satisfeito"], n),
        }
    ).astype({"id": "string", "customer_state": "string", "most_voted_subclass": "string"})


def scrambled(raw: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same orders with every review field shuffled between orders or blanked."""
    rng = np.random.default_rng(seed)
    out = raw.copy()
    for column in REVIEW_COLUMNS:
        values = out[column].to_numpy()[rng.permutation(len(out))]
        out[column] = pd.Series(values, index=out.index, dtype=raw[column].dtype)
        out.loc[rng.random(len(out)) < 0.2, column] = pd.NA
    return out


def assert_same_shipment_features(raw: pd.DataFrame, seed: int) -> None:
    before = olist_tables(raw).tables
    after = olist_tables(scrambled(raw, seed)).tables
    # The scramble reached the contacts, so it was a real change of the source ...
    assert not before["contacts"].equals(after["contacts"])
    # ... and no shipment feature moved.
    assert shipment_features(before).equals(shipment_features(after))


@pytest.mark.parametrize("seed", [1, 2])
def test_review_fields_never_reach_shipment_features(seed: int) -> None:
    assert_same_shipment_features(orders(300, seed), seed)


@pytest.mark.real_data
@pytest.mark.skipif(not OLIST.is_file(), reason=f"Olist sample not found at {OLIST}")
def test_real_sample_reviews_never_reach_shipment_features() -> None:
    assert_same_shipment_features(read_olist_csv(OLIST), seed=3)
