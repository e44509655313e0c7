"""Tracking-page offers: the next-best-offer champion's policy for one order, by id.

For an order id the recommender reads, from the Feast online store, the order's row (who
placed it, what it holds, where its parcel is), the customer's snapshot and the customer's
history with every category; it scores every candidate action with the acceptance model,
values each as p(accept) × list price × (margin − discount), drops categories the customer
returned, and answers the top k with their uplift over showing nothing. The answer names
categories and offers only, never the customer.

An order or customer the store does not know gets a flagged cold-start answer: the best
sellers as plain recommendations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models import next_best_offer as nbo
from serving import schemas
from serving.scoring import ModelUnavailableError, ServedModel, StoreUnavailableError, _python

POLICY_ARTIFACT = "policy/policy.json"
PLACEMENT = "tracking_page"
CHANNEL = "web"


def load_policy(run_id: str, tracking_uri: str) -> nbo.Policy:
    """The candidate actions and catalogue logged with a training run."""
    import mlflow

    from training.register import tracking

    with tracking(tracking_uri):
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{POLICY_ARTIFACT}")
    return nbo.Policy.from_dict(json.loads(text))


def load_recommender(store, tracking_uri: str) -> OfferRecommender:
    """The next-best-offer champion with its policy, over the online store.

    Raises:
        ModelUnavailableError: No champion is registered.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from serving.runtime import load_champion
    from training.register import CHAMPION, tracking

    served = load_champion(nbo.NAME, tracking_uri)
    with tracking(tracking_uri):
        try:
            version = mlflow.MlflowClient().get_model_version(nbo.NAME, served.version)
        except MlflowException as error:
            raise ModelUnavailableError(f"no {CHAMPION} version of {nbo.NAME!r}") from error
    return OfferRecommender.open(store, served, load_policy(version.run_id, tracking_uri))


class ViewReader:
    """Rows of one feature view by entity key, through the provider's online read."""

    def __init__(self, store, view_name: str, features: Sequence[str] | None = None) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self.store = store
        self.view = store.get_feature_view(view_name)
        self.keys = [c.name for c in self.view.entity_columns]
        self.names = list(features) if features else [f.name for f in self.view.features]
        self._entity_key, self._value = EntityKey, Value

    def read(self, keys: Sequence[Sequence[str]]) -> list[dict | None]:
        """One dict per key tuple (in `self.keys` order); None where the store has no row.

        Raises:
            StoreUnavailableError: The store could not be read.
        """
        entity_keys = [
            self._entity_key(
                join_keys=self.keys, entity_values=[self._value(string_val=v) for v in values]
            )
            for values in keys
        ]
        try:
            rows = self.store._get_provider().online_read(
                config=self.store.config,
                table=self.view,
                entity_keys=entity_keys,
                requested_features=self.names,
            )
        except Exception as error:  # any backend failure: the caller answers 503
            raise StoreUnavailableError(f"online feature store unavailable: {error}") from error
        return [
            None if values is None else {n: _python(values.get(n)) for n in self.names}
            for _, values in rows
        ]


@dataclass
class OfferRecommender:
    """The champion's policy over the online store."""

    model: ServedModel
    policy: nbo.Policy
    orders: ViewReader
    customers: ViewReader
    categories: ViewReader

    @classmethod
    def open(cls, store, model: ServedModel, policy: nbo.Policy) -> OfferRecommender:
        """Readers for the views behind the `next_best_offer_v1` service."""
        service = store.get_feature_service(nbo.SPEC.feature_service)
        projected = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
        return cls(
            model=model,
            policy=policy,
            orders=ViewReader(store, "order_contents", projected.get("order_contents")),
            customers=ViewReader(store, "customer_snapshots", projected.get("customer_snapshots")),
            categories=ViewReader(store, "customer_category", projected.get("customer_category")),
        )

    def _cold_start(self, order_id: str, as_of: pd.Timestamp, k: int, why: str):
        catalogue = self.policy.catalogue
        best = np.argsort(-catalogue.popularity, kind="stable")[:k]
        offers = [
            schemas.Offer(
                rank=r + 1,
                category=catalogue.categories[i],
                offer_type="recommendation",
                discount=0.0,
                value_if_accepted=float(catalogue.price[i] * catalogue.margin[i]),
            )
            for r, i in enumerate(best)
        ]
        return schemas.RecommendResponse(
            model=self.model.ref(),
            as_of=as_of.to_pydatetime(),
            order_id=order_id,
            cold_start=True,
            cold_start_reason=why,
            offers=offers,
        )

    def candidate_records(
        self, order: dict, customer: dict, categories: dict[str, dict | None], now_s: float
    ) -> list[dict]:
        """One decision-time feature record per candidate action, in action order."""
        reference = self.policy.reference_category(categories)
        blank = dict.fromkeys(self.categories.names)
        base = {**customer, **order, "placement": PLACEMENT, "channel": CHANNEL}
        records = []
        for action in self.policy.actions.itertuples(index=False):
            category = reference if action.offer_type == nbo.NONE else action.category
            record = {
                **base,
                **(categories.get(category) or blank),
                "category": category,
                "offer_type": action.offer_type,
                "discount": float(action.discount),
            }
            records.append(nbo.decision_record(record, now_s))
        return records

    def recommend(self, order_id: str, k: int, as_of: pd.Timestamp) -> schemas.RecommendResponse:
        """Top-k offers for the order's tracking page.

        Raises:
            StoreUnavailableError: The online store could not be read.
        """
        (order,) = self.orders.read([[order_id]])
        if order is None or order.get("order_customer_id") is None:
            return self._cold_start(order_id, as_of, k, "unknown order")
        customer_id = str(order["order_customer_id"])
        (customer,) = self.customers.read([[customer_id]])
        if customer is None:
            return self._cold_start(order_id, as_of, k, "no history for the customer yet")
        names = self.policy.catalogue.categories
        rows = self.categories.read([_ordered(self.categories.keys, customer_id, c) for c in names])
        by_category = dict(zip(names, rows, strict=True))
        records = self.candidate_records(order, customer, by_category, as_of.timestamp())
        probability = self.model.probability(self.model.matrix_from_records(records))
        actions = self.policy.actions
        value = self.policy.catalogue.value(
            pd.Series([r["category"] for r in records]), actions["discount"].to_numpy()
        )
        expected = probability * value
        none = actions["offer_type"].to_numpy() == nbo.NONE
        no_offer = float(expected[none][0]) if none.any() else 0.0
        returned = np.array([(r.get("category_returns_total") or 0) > 0 for r in records])
        candidates = np.flatnonzero(~none & ~returned & np.isfinite(expected))
        order_by = candidates[np.argsort(-expected[candidates], kind="stable")][:k]
        offers = [
            schemas.Offer(
                rank=rank + 1,
                category=records[i]["category"],
                offer_type=records[i]["offer_type"],
                discount=float(records[i]["discount"]),
                acceptance_probability=float(probability[i]),
                expected_value=float(expected[i]),
                uplift_over_no_offer=float(expected[i] - no_offer),
                value_if_accepted=float(value[i]),
            )
            for rank, i in enumerate(order_by)
        ]
        return schemas.RecommendResponse(
            model=self.model.ref(),
            as_of=as_of.to_pydatetime(),
            order_id=order_id,
            cold_start=False,
            parcel_late=bool(records[0]["parcel_late"]) if records else None,
            offers=offers,
        )


def _ordered(keys: Sequence[str], customer_id: str, category: str) -> list[str]:
    values = {"customer_id": customer_id, "category": category}
    return [values[k] for k in keys]
