"""Tracking-page offers: the next-best-offer champion's policy for one order, by id.

For an order id the recommender reads, from the Feast online store, the order's row (who
placed it, what it holds, where its parcel is), the customer's snapshot and the customer's
history with every category; it scores every candidate action with the acceptance model,
values each as p(accept) × list price × (margin − discount), and answers the policy of
`models.policies.offers.ranked_offers` (the one training values off-policy): at most k
offers, best first, never a category the customer returned and only offers worth more than
showing nothing (the no-offer control: the customer buying anyway), each with its uplift
over showing nothing, always > 0. When showing nothing is worth more than every allowed
offer the answer is `"offers": []` with `"cold_start": false`: the page shows no offer. The
answer names categories and offers only, never the customer.

An order or customer the store does not know gets a flagged cold-start answer: the best
sellers as plain recommendations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from models import next_best_offer as nbo
from models.policies import offers as offer_policy
from models.served import registry
from models.served.registry import tracking
from serving import schemas
from serving.online import FeatureReader
from serving.scoring import ServedModel

POLICY_ARTIFACT = "policy/policy.json"
# Model inputs that differ between candidates of one decision: the category's history and
# the decision features derived from it (the action's own columns are set separately).
CATEGORY_COLUMNS = (
    "category",
    "category_orders_total",
    "category_spend_total",
    "category_returns_total",
    "days_since_category_purchase",
    "category_spend_share",
    "category_in_order",
    "category_order_share",
)
PLACEMENT = "tracking_page"
CHANNEL = "web"
# Why an answer is a cold start: the best sellers stand in for the model.
UNKNOWN_ORDER = "unknown order"
NO_HISTORY = "no history for the customer yet"


def load_policy(run_id: str, tracking_uri: str) -> nbo.Policy:
    """The candidate actions and catalogue logged with a training run."""
    import mlflow

    with tracking(tracking_uri):
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{POLICY_ARTIFACT}")
    return nbo.Policy.from_dict(json.loads(text))


def load_recommender(
    store,
    tracking_uri: str,
    offline_root: Path | None = None,
    copies: Path | None = None,
    cache_rows: int = 0,
) -> OfferRecommender:
    """The next-best-offer champion with its policy, over the online store (and the offline
    tables under `offline_root` for point-in-time reads, see `OfferRecommender.open`); with
    `copies`, both come from the champion's local copy (`registry.load_champion`); the
    readers keep `cache_rows` rows each (`FeatureReader`).

    Raises:
        ModelUnavailableError: No champion is registered, and no local copy serves.
    """
    champion, model = registry.load_champion(
        nbo.NAME, tracking_uri, copies, run_artifacts=(POLICY_ARTIFACT,)
    )
    served = ServedModel(nbo.NAME, champion.version, sorted(champion.aliases), model, champion)
    if champion.folder is not None:
        policy = nbo.Policy.from_dict(json.loads((champion.folder / POLICY_ARTIFACT).read_text()))
    else:
        policy = load_policy(champion.run_id, tracking_uri)
    return OfferRecommender.open(store, served, policy, offline_root, cache_rows)


@dataclass(frozen=True)
class Decision:
    """One order's candidate actions, weighed as the served policy weighs them.

    Attributes:
        order, customer, categories: The feature rows read for the order, its customer and
            the customer's history with each category.
        now_s: The decision instant, in seconds.
        matrix: The model's input, one row per candidate action (policy order).
        names, kinds: Each candidate's category and offer type.
        discount, probability, value, expected: Each candidate's discount, calibrated
            acceptance probability, value if accepted and expected value.
        ranked: The candidates the page offers, best first (allowed, and worth more than
            showing nothing).
        no_offer: The expected value of showing nothing.
    """

    order: dict
    customer: dict
    categories: dict[str, dict | None]
    now_s: float
    matrix: np.ndarray
    names: list[str]
    kinds: list[str]
    discount: np.ndarray
    probability: np.ndarray
    value: np.ndarray
    expected: np.ndarray
    ranked: np.ndarray
    no_offer: float


@dataclass
class OfferRecommender:
    """The champion's policy over the online store."""

    model: ServedModel
    policy: nbo.Policy
    orders: FeatureReader
    customers: FeatureReader
    categories: FeatureReader

    @classmethod
    def open(
        cls,
        store,
        model: ServedModel,
        policy: nbo.Policy,
        offline_root: Path | None = None,
        cache_rows: int = 0,
    ) -> OfferRecommender:
        """Point-in-time readers for the views behind the `next_best_offer_v1` service.

        Args:
            store: The Feast store.
            model: The champion.
            policy: Its policy.
            offline_root: The published offline tables (`<features>/current`), read for
                entities whose online row is newer than the decision instant.
            cache_rows: Rows each reader keeps (`FeatureReader`; 0: none).
        """
        service = store.get_feature_service(nbo.SPEC.feature_service)
        projected = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}

        def reader(view: str) -> FeatureReader:
            return FeatureReader(store, view, projected.get(view), offline_root, cache_rows)

        return cls(
            model=model,
            policy=policy,
            orders=reader("order_contents"),
            customers=reader("customer_snapshots"),
            categories=reader("customer_category"),
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
        for kind, category, discount in zip(*self._actions, strict=True):
            name = reference if kind == nbo.NONE else category
            record = {
                **base,
                **(categories.get(name) or blank),
                "category": name,
                "offer_type": kind,
                "discount": discount,
            }
            records.append(nbo.decision_record(record, now_s))
        return records

    def candidate_matrix(
        self, order: dict, customer: dict, categories: dict[str, dict | None], now_s: float
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """The model's input matrix of every candidate action, built without a record per
        candidate: the customer's and order's columns once, the category's columns once per
        category, then the action's own columns (equal to `candidate_records` through
        `ServedModel.matrix_from_records`; a test holds the two equal).

        Returns:
            The matrix (one row per action), each row's category, and the customer's returns
            of it (`category_returns_total`, NaN where the store has none).
        """
        base = {**customer, **order, "placement": PLACEMENT, "channel": CHANNEL}
        row = self.model.matrix_from_records([nbo.decision_record(base, now_s)])[0]
        index = {name: j for j, name in enumerate(self.model.features)}
        category_columns = [(index[name], name) for name in CATEGORY_COLUMNS if name in index]
        blank = dict.fromkeys(self.categories.names)
        reference = self.policy.reference_category(categories)
        kinds, action_categories, _ = self._actions
        names = [
            reference if kind == nbo.NONE else category
            for kind, category in zip(kinds, action_categories, strict=True)
        ]
        by_category: dict[str, tuple[np.ndarray, float]] = {}
        for name in dict.fromkeys(names):
            stored = categories.get(name) or blank
            derived = nbo.decision_record(
                {
                    **stored,
                    "category": name,
                    "monetary_total": customer.get("monetary_total"),
                    "orders_total": customer.get("orders_total"),
                    "order_categories": order.get("order_categories"),
                },
                now_s,
            )
            filled = row.copy()
            for j, column in category_columns:
                filled[j] = self.model.model.layout.encode(column, derived.get(column))
            returns = stored.get("category_returns_total")
            by_category[name] = (filled, math.nan if returns is None else float(returns))
        matrix = np.stack([by_category[name][0] for name in names])
        returns_total = np.array([by_category[name][1] for name in names], dtype=np.float64)
        type_j, discount_j = index.get("offer_type"), index.get("discount")
        if type_j is not None:
            matrix[:, type_j] = self._offer_type_codes
        if discount_j is not None:
            matrix[:, discount_j] = self._discount
        return matrix, names, returns_total

    def decide(self, order_id: str, as_of: pd.Timestamp) -> Decision | str:
        """Every candidate action for the order weighed as the served policy weighs them, or
        why the order is a cold start (`UNKNOWN_ORDER`, `NO_HISTORY`).

        Raises:
            StoreUnavailableError: The online store could not be read.
        """
        (order,) = self.orders.read([[order_id]], as_of)
        if order is None or order.get("order_customer_id") is None:
            return UNKNOWN_ORDER
        customer_id = str(order["order_customer_id"])
        (customer,) = self.customers.read([[customer_id]], as_of)
        if customer is None:
            return NO_HISTORY
        catalogue = self.policy.catalogue
        rows = self.categories.read(
            [_ordered(self.categories.keys, customer_id, c) for c in catalogue.categories], as_of
        )
        by_category = dict(zip(catalogue.categories, rows, strict=True))
        now_s = as_of.timestamp()
        matrix, names, returns_total = self.candidate_matrix(order, customer, by_category, now_s)
        probability = self.model.probability(matrix)
        kinds, none, discount = list(self._actions[0]), self._none, self._discount.copy()
        code = np.array([self._category_code[name] for name in names])
        value = catalogue.price[code] * (catalogue.margin[code] - discount)
        expected = probability * value
        allowed = offer_policy.allowed_mask(returns_total, kinds)
        ranked = offer_policy.ranked_offers(expected[None, :], allowed[None, :], none)[0]
        return Decision(
            order=order,
            customer=customer,
            categories=by_category,
            now_s=now_s,
            matrix=matrix,
            names=names,
            kinds=kinds,
            discount=discount,
            probability=probability,
            value=value,
            expected=expected,
            ranked=ranked[ranked >= 0],
            # The value of showing nothing, as `ranked_offers` counts it.
            no_offer=float(offer_policy.no_offer_values(expected[none])[0]),
        )

    def recommend(self, order_id: str, k: int, as_of: pd.Timestamp) -> schemas.RecommendResponse:
        """At most k offers for the order's tracking page, best first: the served policy
        (`offer_policy.ranked_offers`), so only allowed offers worth more than showing nothing; none
        when showing nothing is best.

        Raises:
            StoreUnavailableError: The online store could not be read.
        """
        decision = self.decide(order_id, as_of)
        if isinstance(decision, str):
            return self._cold_start(order_id, as_of, k, decision)
        offers = [
            schemas.Offer(
                rank=rank + 1,
                category=decision.names[i],
                offer_type=decision.kinds[i],
                discount=float(decision.discount[i]),
                acceptance_probability=float(decision.probability[i]),
                expected_value=float(decision.expected[i]),
                uplift_over_no_offer=float(decision.expected[i] - decision.no_offer),
                value_if_accepted=float(decision.value[i]),
            )
            for rank, i in enumerate(decision.ranked[: max(k, 0)])
        ]
        order, now_s = decision.order, decision.now_s
        promised, delivered = order.get("order_promised_epoch"), order.get("order_delivered_epoch")
        return schemas.RecommendResponse(
            model=self.model.ref(),
            as_of=as_of.to_pydatetime(),
            order_id=order_id,
            cold_start=False,
            parcel_late=promised is not None and now_s > promised and delivered is None,
            offers=offers,
        )

    def candidate_record(self, decision: Decision, i: int) -> dict:
        """The decision-time feature record of candidate `i` (the values its row encodes)."""
        records = self.candidate_records(
            decision.order, decision.customer, decision.categories, decision.now_s
        )
        return records[i]

    @cached_property
    def _actions(self) -> tuple[list[str], list[str | None], list[float]]:
        actions = self.policy.actions
        return (
            actions["offer_type"].tolist(),
            actions["category"].tolist(),
            [float(d) for d in actions["discount"].tolist()],
        )

    @cached_property
    def _discount(self) -> np.ndarray:
        return self.policy.actions["discount"].to_numpy(np.float64)

    @cached_property
    def _offer_type_codes(self) -> np.ndarray:
        """Each action's offer type, encoded as the model reads it."""
        layout = self.model.model.layout
        return np.array([layout.encode("offer_type", kind) for kind in self._actions[0]])

    @cached_property
    def _none(self) -> np.ndarray:
        return np.array([kind == nbo.NONE for kind in self._actions[0]])

    @cached_property
    def _category_code(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.policy.catalogue.categories)}


def _ordered(keys: Sequence[str], customer_id: str, category: str) -> list[str]:
    values = {"customer_id": customer_id, "category": category}
    return [values[k] for k in keys]
