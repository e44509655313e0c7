"""Tracking-page offers from the next-best-offer champion over a real online store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aftersale.settings import Settings
from features.build.tables import build_feature_tables, publish_tables, watermark
from features.store.config import feature_store
from features.store.sync import apply_definitions, materialize
from models import next_best_offer as nbo
from serving.recommend import OfferRecommender, load_policy
from serving.runtime import load_champion
from training.policy import train_policy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recommender(sim_tables, tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("recommend"))
    publish_tables(build_feature_tables(sim_tables), settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    end = watermark(sim_tables)
    materialize(store, end.to_pydatetime())
    uri = f"sqlite:///{settings.data_dir / 'mlflow.db'}"
    result = train_policy(store, settings, tables=sim_tables, tracking_uri=uri, explain_rows=100)
    served = load_champion(nbo.NAME, uri)
    policy = load_policy(result.run_id, uri)
    return OfferRecommender.open(store, served, policy), end


def orders_of(sim_tables) -> pd.DataFrame:
    return sim_tables["orders"].select(["order_id", "customer_id", "order_ts"]).to_pandas()


def test_offers_are_ranked_by_expected_value_without_personal_data(recommender, sim_tables) -> None:
    rec, end = recommender
    order = orders_of(sim_tables).sort_values("order_ts").iloc[-1]
    answer = rec.recommend(order["order_id"], k=4, as_of=end)
    assert not answer.cold_start
    assert 1 <= len(answer.offers) <= 4
    values = [o.expected_value for o in answer.offers]
    assert values == sorted(values, reverse=True)
    for offer in answer.offers:
        assert offer.expected_value == pytest.approx(
            offer.acceptance_probability * offer.value_if_accepted
        )
    text = answer.model_dump_json()
    assert order["customer_id"] not in text
    assert "customer_id" not in json.loads(text)


def test_the_online_path_scores_as_the_trained_model_does(recommender, sim_tables) -> None:
    rec, end = recommender
    order = orders_of(sim_tables).sort_values("order_ts").iloc[-2]
    (row,) = rec.orders.read([[order["order_id"]]])
    (customer,) = rec.customers.read([[order["customer_id"]]])
    names = rec.policy.catalogue.categories
    rows = rec.categories.read([[order["customer_id"], c] for c in names])
    records = rec.candidate_records(
        row, customer, dict(zip(names, rows, strict=True)), end.timestamp()
    )
    from_records = rec.model.matrix_from_records(records)
    matrix, names, _ = rec.candidate_matrix(
        row, customer, dict(zip(names, rows, strict=True)), end.timestamp()
    )
    np.testing.assert_array_equal(matrix, from_records)
    assert names == [r["category"] for r in records]
    fast = rec.model.probability(matrix)
    assert len(records) == len(rec.policy.actions)
    # The training path: a frame through the model's own layout and calibrator.
    raw = pd.DataFrame(
        [{k: v for k, v in r.items() if k in rec.model.features} for r in records]
    ).astype(object)
    slow = rec.model.model.predict_proba(raw.where(raw.notna(), None))
    np.testing.assert_allclose(fast, slow, rtol=1e-9)


def test_a_returned_category_is_never_offered(recommender, sim_tables) -> None:
    rec, end = recommender
    returns = sim_tables["returns"].select(["order_id", "product_id", "requested_ts"]).to_pandas()
    # Snapshots hold what happened before each midnight: returns of the last day are not
    # known to the store yet.
    returns = returns[pd.to_datetime(returns["requested_ts"], utc=True) < end.normalize()]
    products = sim_tables["products"].select(["product_id", "category"]).to_pandas()
    orders = orders_of(sim_tables)
    returned = returns.merge(products, on="product_id").merge(orders, on="order_id")
    assert len(returned), "the small business has returns"
    checked = 0
    for customer_id, group in returned.groupby("customer_id"):
        latest = orders[orders["customer_id"] == customer_id].sort_values("order_ts").iloc[-1]
        answer = rec.recommend(latest["order_id"], k=20, as_of=end)
        if answer.cold_start:
            continue
        offered = {o.category for o in answer.offers}
        assert not offered & set(group["category"]), customer_id
        checked += 1
        if checked >= 10:
            break
    assert checked > 0


def test_unknown_orders_get_a_flagged_cold_start(recommender) -> None:
    rec, end = recommender
    answer = rec.recommend("no-such-order", k=3, as_of=end)
    assert answer.cold_start
    assert answer.cold_start_reason == "unknown order"
    assert len(answer.offers) == 3
    assert all(o.offer_type == "recommendation" and o.discount == 0 for o in answer.offers)
