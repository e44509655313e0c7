"""Next-best offer: which offer, if any, to show a customer at a tracking-page view or an
outreach, learned from logged offers and their propensities.

- Entity: (customer, candidate category, tracked order); outreach decisions have no order and
  use the placeholder `NO_ORDER`, which matches no order's features.
- Decisions: every logged offer (`offers` table), at its `ts`. The candidate actions are
  every category × offer variant in the logs (plain recommendation, each discount level)
  plus "none", the no-offer control.
- Label: accepted within 7 days (`accepted_ts` set). The control arm's label is "bought the
  reference category anyway": its category is the customer's most-ordered category before
  the decision, as the logging policy favours it.
- Value of an accepted offer: list price × (margin − discount): the revenue's margin at
  list price, less the discount paid out of it (the category's median list price and mean
  margin from `products`). A plain recommendation keeps the full margin; a discount pays
  only when it raises acceptance enough; a discount to a customer who buys anyway is lost.
- Reward of a logged decision: its value if accepted, else 0 (list price from the logged
  revenue / (1 − discount)).
- Features: the `next_best_offer_v1` service (who the customer is, their history with the
  candidate category, what the tracked order holds and where its parcel is), decision-time
  ages, the decision's context (placement, channel, whether the tracked parcel is past its
  promise and undelivered) and the action (category, offer type, discount, whether the
  order holds the category).
- Calibration: per arm (`CALIBRATION_ARM`): the control arm ("none", buying anyway) and the
  offers each get their own calibrator under the inverse-propensity weights, since the
  booster errs differently on each and the policy compares them; an arm with too few
  validation rows keeps the shared one.
- Policy: show the allowed action with the highest expected value p̂(accept) × value, "show
  nothing" (the no-offer control, worth the customer buying anyway) being one of them: an
  offer is shown only when it is worth more than showing nothing. Never a category the
  customer returned (`category_returns_total` > 0 as of the decision). Its one definition
  is `models.policies.offers.ranked_offers`: training values its first choice (`choose`)
  off-policy, and the service answers its first k (an empty answer when showing nothing is
  best).
- Baselines: the popularity policy (a plain recommendation of the best-selling category of
  the training window, the next one when returned), the random policy (uniform over the
  allowed offers) and the logging policy, all valued off-policy (IPS, SNIPS, DR) on the
  test window's logged decisions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.build.derived import add_time_features, as_of_seconds, derive_record
from features.frames import sorted_stably
from features.instants import utc_times
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, Kind, ModelSpec, SplitConfig

NAME = "next_best_offer"
WINDOW = pd.Timedelta(days=7)
NO_ORDER = "(none)"
NONE = "none"
ENTITY = ("customer_id", "category", "order_id")
# The model input and its value that mark the control arm's rows, calibrated apart from the
# offers' (`models.served.calibration.ArmCalibration`).
CALIBRATION_ARM = ("offer_type", NONE)
ACTION_COLUMNS = ("category", "offer_type", "discount")
# Model inputs that come with the decision, not from the feature store (numeric ones are
# listed with the derived features).
DECISION_COLUMNS = ("category", "offer_type", "placement", "channel")
_S = 1_000_000  # µs per second
_KEY_STRIDE = 10**10  # customer code × stride + seconds: one sortable key per line


@dataclass(frozen=True)
class Catalogue:
    """What an accepted offer is worth, per category.

    Attributes:
        categories: Category names, sorted.
        price: Median list price per category.
        margin: Mean gross margin (fraction of list price) per category.
        popularity: Order lines per category (ties in "most ordered" go to the popular one).
    """

    categories: tuple[str, ...]
    price: np.ndarray
    margin: np.ndarray
    popularity: np.ndarray

    @staticmethod
    def of(tables: Mapping[str, pa.Table]) -> Catalogue:
        """The catalogue from `products` (and `order_items` for popularity)."""
        products = tables["products"].select(["product_id", "category", "price", "margin"])
        frame = products.to_pandas()
        stats = frame.groupby("category", sort=True).agg(
            price=("price", "median"), margin=("margin", "mean")
        )
        lines = pd.Series(0.0, index=stats.index)
        if "order_items" in tables:
            items = tables["order_items"].select(["product_id"]).to_pandas()
            counted = items.merge(frame[["product_id", "category"]], on="product_id")
            lines = lines.add(counted["category"].value_counts(), fill_value=0.0)
        return Catalogue(
            categories=tuple(stats.index),
            price=stats["price"].to_numpy(np.float64),
            margin=stats["margin"].to_numpy(np.float64),
            popularity=lines.reindex(stats.index).fillna(0.0).to_numpy(np.float64),
        )

    def code(self, category: pd.Series) -> np.ndarray:
        """Index of each category name; -1 where unknown or missing."""
        index = pd.Index(self.categories)
        return index.get_indexer(category.astype(object).where(category.notna(), None))

    def value(self, category: pd.Series, discount: np.ndarray) -> np.ndarray:
        """Value of an accepted offer: list price × (margin − discount)."""
        code = self.code(category)
        known = code >= 0
        price = np.where(known, self.price[np.maximum(code, 0)], np.nan)
        margin = np.where(known, self.margin[np.maximum(code, 0)], np.nan)
        return price * (margin - np.asarray(discount, dtype=np.float64))


def _orders_of(orders: pa.Table, customer_id: pd.Series) -> pa.Table:
    """The rows of `orders` (with its `customer_id`) of the given customers."""
    wanted = pa.array(
        pd.unique(customer_id.astype(object)), orders.schema.field("customer_id").type
    )
    return orders.filter(pc.is_in(orders.column("customer_id"), value_set=wanted))


def reference_categories(
    tables: Mapping[str, pa.Table],
    catalogue: Catalogue,
    customer_id: pd.Series,
    at: pd.Series,
) -> pd.Series:
    """Each customer's most-ordered category (by order lines) strictly before `at`.

    Ties and customers without orders go to the more popular category.
    """
    # Only the asked customers' lines count (each customer's counts are their own): the
    # orders are narrowed before the order lines are joined to them.
    orders = _orders_of(
        tables["orders"].select(["order_id", "customer_id", "order_ts"]), customer_id
    )
    items = tables["order_items"].select(["order_id", "product_id"])
    items = items.filter(pc.is_in(items.column("order_id"), value_set=orders.column("order_id")))
    products = tables["products"].select(["product_id", "category"]).to_pandas()
    lines = (
        items.to_pandas().merge(products, on="product_id").merge(orders.to_pandas(), on="order_id")
    )
    customers = pd.Index(pd.unique(pd.concat([lines["customer_id"], customer_id])))
    line_code = customers.get_indexer(lines["customer_id"]).astype(np.int64)
    line_s = utc_times(lines["order_ts"]).to_numpy("datetime64[us]")
    line_key = line_code * _KEY_STRIDE + line_s.astype(np.int64) // _S
    category = catalogue.code(lines["category"])
    query_code = customers.get_indexer(customer_id).astype(np.int64)
    query_s = utc_times(at).to_numpy("datetime64[us]").astype(np.int64) // _S
    query_key = query_code * _KEY_STRIDE + query_s
    # A customer's keys lie within half a stride of code × stride (instants within about
    # 158 years of 1970), so this bound is below all of theirs and above the customer's before.
    lower = query_code * _KEY_STRIDE - _KEY_STRIDE // 2
    # Per category, the customer's lines strictly before the instant, by binary search over
    # the category's sorted keys: memory of the order lines once, not a running count of
    # every category at every line.
    counts = np.zeros((len(query_key), len(catalogue.categories)), dtype=np.float64)
    for code in range(len(catalogue.categories)):
        keys = np.sort(line_key[category == code])
        counts[:, code] = np.searchsorted(keys, query_key, side="left") - np.searchsorted(
            keys, lower, side="left"
        )
    # Popularity breaks ties (a fraction below one line).
    rank = catalogue.popularity / (catalogue.popularity.max() + 1.0)
    top = np.argmax(counts + 0.5 * rank, axis=1)
    return pd.Series(np.asarray(catalogue.categories, dtype=object)[top], index=customer_id.index)


def label_events(tables: dict[str, pa.Table]) -> pd.DataFrame:
    """One row per logged offer decision whose 7-day window has closed.

    Returns:
        offer_id, customer_id, category, order_id, event_timestamp, label, label_ts,
        offer_type, discount, placement, channel, propensity, value (of the logged action
        if accepted), reward.
    """
    source = tables["offers"]
    if not source.num_rows:
        return pd.DataFrame(columns=["offer_id", *ENTITY, EVENT_TIME, LABEL, LABEL_KNOWN])
    catalogue = Catalogue.of(tables)
    ts = utc_times(source.column("ts").to_pandas())
    accepted = utc_times(source.column("accepted_ts").to_pandas())
    end = max(ts.max(), accepted.max() if accepted.notna().any() else ts.max())
    closed = (ts + WINDOW <= end).to_numpy()
    # Filtered before pandas: a frame of every offer beside its filtered copy was the
    # largest thing held at once (as were the unsorted events beside their sorted copy,
    # hence the order is found first and each column taken in it once).
    offers = source.filter(pa.array(closed)).to_pandas()
    ts = ts[closed].reset_index(drop=True)
    accepted = accepted[closed].reset_index(drop=True)
    order = sorted_stably(
        pd.DataFrame({EVENT_TIME: ts, "offer_id": offers["offer_id"]}), [EVENT_TIME, "offer_id"]
    ).index.to_numpy()
    control = offers["offer_type"] == NONE
    category = offers["category"].astype(object)
    if control.any():
        category = category.copy()
        category[control] = reference_categories(
            tables, catalogue, offers.loc[control, "customer_id"], ts[control]
        )
    label = (accepted.notna() & (accepted < ts + WINDOW)).to_numpy(np.int64)[order]
    discount = offers["discount"].to_numpy(np.float64)
    order_id = offers["order_id"].astype(object).where(offers["order_id"].notna(), NO_ORDER)
    category = category.to_numpy()[order]
    discount = discount[order]
    value = catalogue.value(pd.Series(category), discount)
    # The realised value uses the logged revenue's list price where there is one.
    revenue = offers["revenue"].to_numpy(np.float64)[order]
    list_price = revenue / np.maximum(1.0 - discount, 1e-9)
    margin = catalogue.margin[np.maximum(catalogue.code(pd.Series(category)), 0)]
    realised = np.where(np.isfinite(revenue), list_price * (margin - discount), value)
    ts = ts.iloc[order].reset_index(drop=True)
    return pd.DataFrame(
        {
            "offer_id": offers["offer_id"].to_numpy()[order],
            "customer_id": offers["customer_id"].to_numpy()[order],
            "category": category,
            "order_id": order_id.to_numpy()[order],
            # Instants as arrays of their own type: `to_numpy` makes an object of each.
            EVENT_TIME: ts.astype("datetime64[ns, UTC]").array,
            LABEL: label,
            LABEL_KNOWN: (ts + WINDOW).astype("datetime64[ns, UTC]").array,
            "offer_type": offers["offer_type"].to_numpy()[order],
            "discount": discount,
            "placement": offers["placement"].to_numpy()[order],
            "channel": offers["channel"].to_numpy()[order],
            "propensity": offers["propensity"].to_numpy(np.float64)[order],
            "value": value,
            "reward": np.where(label == 1, realised, 0.0),
        },
        # The columns are this function's own: consolidating them would copy each once more.
        copy=False,
    )


def action_space(events: pd.DataFrame, catalogue: Catalogue) -> pd.DataFrame:
    """Every candidate action: each category × each logged offer variant, then "none".

    Returns:
        action (index), category, offer_type, discount; "none" last, its category the
        decision's reference category (filled per decision by `candidates`).
    """
    offered = events[events["offer_type"] != NONE]
    variants = (
        offered[["offer_type", "discount"]]
        .drop_duplicates()
        .sort_values(["discount", "offer_type"], kind="stable")
    )
    rows = [
        (category, offer_type, float(discount))
        for category in catalogue.categories
        for offer_type, discount in variants.itertuples(index=False)
    ]
    rows.append((None, NONE, 0.0))
    frame = pd.DataFrame(rows, columns=list(ACTION_COLUMNS))
    return frame.rename_axis("action").reset_index()


def logged_actions(events: pd.DataFrame, actions: pd.DataFrame) -> np.ndarray:
    """Index in `actions` of each logged decision's action; -1 when not in the space."""
    keyed = actions.assign(category=actions["category"].fillna("")).set_index(
        ["category", "offer_type", "discount"]
    )["action"]
    category = events["category"].where(events["offer_type"] != NONE, "")
    keys = pd.MultiIndex.from_arrays(
        [category.to_numpy(), events["offer_type"].to_numpy(), events["discount"].to_numpy()]
    )
    return keyed.reindex(keys).fillna(-1).to_numpy(np.int64)


def candidates(decisions: pd.DataFrame, actions: pd.DataFrame) -> pd.DataFrame:
    """Every (decision, candidate action) pair, decision-major, action-minor.

    The "none" action takes the decision's reference category (the logged category of a
    control decision, else the decision's own category is unknown for "none" and the
    customer's reference category must be supplied as `reference_category`).
    """
    n, a = len(decisions), len(actions)
    base = decisions.drop(columns=[*ACTION_COLUMNS], errors="ignore").reset_index(drop=True)
    out = base.iloc[np.repeat(np.arange(n), a)].reset_index(drop=True)
    out["decision"] = np.repeat(np.arange(n), a)
    out["action"] = np.tile(actions["action"].to_numpy(), n)
    out["offer_type"] = np.tile(actions["offer_type"].to_numpy(), n)
    out["discount"] = np.tile(actions["discount"].to_numpy(np.float64), n)
    category = np.tile(actions["category"].to_numpy(object), n)
    none = out["offer_type"].to_numpy() == NONE
    category[none] = decisions["reference_category"].to_numpy(object)
    out["category"] = category
    return out


def decision_features(frame: pd.DataFrame, as_of: pd.Series | pd.Timestamp) -> pd.DataFrame:
    """Decision-time features: ages from stored instants, whether the tracked parcel is past
    its promise and still undelivered, whether the order holds the candidate category, and
    the category's share of the customer's orders."""
    out = add_time_features(frame, as_of)
    now = as_of_seconds(as_of, len(out))
    promised = out["order_promised_epoch"].to_numpy(np.float64)
    delivered = out["order_delivered_epoch"].to_numpy(np.float64)
    out["parcel_late"] = ((now > promised) & np.isnan(delivered)).astype(np.float64)
    orders = out["orders_total"].to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = out["category_orders_total"].to_numpy(np.float64) / orders
    out["category_order_share"] = np.where(orders > 0, np.nan_to_num(share), np.nan)
    held = out.get("order_categories")
    if held is not None:
        out["category_in_order"] = category_in_order(out["category"], held)
    else:
        out["category_in_order"] = 0.0
    return out


def category_in_order(category: pd.Series, held: pd.Series) -> np.ndarray:
    """1.0 where a row's `category` is one of the `|`-separated categories in `held`, else
    0.0 (a missing category is in no order; a missing `held` is an empty text).

    Each distinct `held` text is split once and each row looked up by the codes of its text
    and category: an offer evaluation asks this of five million candidate rows, 25 to an
    order, where splitting row by row took seconds.
    """
    text_codes, texts = _text_codes(held)
    category_codes, categories = _text_codes(category)
    missing = text_codes < 0
    if missing.any():
        text_codes = np.where(missing, len(texts), text_codes)
        texts = np.append(texts, "")
    if len(categories) == 0:
        return np.zeros(len(category), dtype=np.float64)
    parts = pd.Series(texts, dtype=object).str.split("|").explode()
    part_codes = pd.Index(categories).get_indexer(parts.to_numpy(object))
    found = part_codes >= 0
    pairs = parts.index.to_numpy(np.int64)[found] * len(categories) + part_codes[found]
    rows = text_codes.astype(np.int64) * len(categories) + category_codes
    return (np.isin(rows, pairs) & (category_codes >= 0)).astype(np.float64)


def _text_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each value's code among the distinct texts of `values` (−1 where missing), and those
    texts (values that are not strings by their `str`)."""
    codes, uniques = pd.factorize(values)
    if len(uniques) == 0:
        return codes, np.array([], dtype=object)
    texts = pd.Series(np.asarray(uniques, dtype=object)).map(str).to_numpy(object)
    again, texts = pd.factorize(texts)
    return np.where(codes >= 0, again[np.maximum(codes, 0)], -1), np.asarray(texts, dtype=object)


def decision_record(record: dict, now_s: float) -> dict:
    """`decision_features` for one row given as a dict, without pandas (the per-request
    path; a test holds the two equal)."""
    out = derive_record(record, now_s)
    promised, delivered = record.get("order_promised_epoch"), record.get("order_delivered_epoch")
    out["parcel_late"] = float(promised is not None and now_s > promised and delivered is None)
    held = record.get("order_categories") or ""
    category = record.get("category")
    out["category_in_order"] = float(category is not None and category in held.split("|"))
    orders = record.get("orders_total")
    share = record.get("category_orders_total")
    if orders is None or orders <= 0:
        out["category_order_share"] = math.nan
    else:
        out["category_order_share"] = (share or 0.0) / orders
    return out


@dataclass(frozen=True)
class Policy:
    """What serving needs besides the acceptance model: the candidate actions and what an
    accepted offer is worth (logged with each run as `policy/policy.json`)."""

    actions: pd.DataFrame
    catalogue: Catalogue

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "actions": [
                {
                    "action": int(a.action),
                    "category": a.category,
                    "offer_type": a.offer_type,
                    "discount": float(a.discount),
                }
                for a in self.actions.itertuples(index=False)
            ],
            "catalogue": {
                "categories": list(self.catalogue.categories),
                "price": self.catalogue.price.tolist(),
                "margin": self.catalogue.margin.tolist(),
                "popularity": self.catalogue.popularity.tolist(),
            },
        }

    @staticmethod
    def from_dict(data: dict) -> Policy:
        """Inverse of `to_dict`."""
        catalogue = data["catalogue"]
        return Policy(
            actions=pd.DataFrame(data["actions"], columns=["action", *ACTION_COLUMNS]),
            catalogue=Catalogue(
                categories=tuple(catalogue["categories"]),
                price=np.asarray(catalogue["price"], dtype=np.float64),
                margin=np.asarray(catalogue["margin"], dtype=np.float64),
                popularity=np.asarray(catalogue["popularity"], dtype=np.float64),
            ),
        )

    def reference_category(self, category_rows: Mapping[str, dict | None]) -> str:
        """The customer's most-ordered category (ties and no history: the best seller)."""
        rank = self.catalogue.popularity / (self.catalogue.popularity.max() + 1.0)
        counts = [
            ((category_rows.get(c) or {}).get("category_orders_total") or 0.0) + 0.5 * rank[i]
            for i, c in enumerate(self.catalogue.categories)
        ]
        return self.catalogue.categories[int(np.argmax(counts))]


SPEC = ModelSpec(
    name=NAME,
    kind=Kind.POLICY,
    metric_label="policy value (DR)",
    entity=ENTITY,
    decision_time="at a tracking-page view or an outreach, for each candidate offer",
    raw_tables=("offers", "orders", "order_items", "products", "shipments", "returns"),
    label_events=label_events,
    feature_service="next_best_offer_v1",
    categorical=("category", "offer_type", "placement", "channel", "order_main_category"),
    exclude=(
        "last_order_epoch",
        "signup_epoch",
        "category_last_purchase_epoch",
        "order_categories",
        "order_customer_id",
        "order_promised_epoch",
        "order_delivered_epoch",
    ),
    derived=(
        "days_since_last_order",
        "tenure_days",
        "days_since_category_purchase",
        "category_spend_share",
        "category_in_order",
        "category_order_share",
        "discount",
        "parcel_late",
    ),
    baseline=lambda frame: frame["propensity"].to_numpy(np.float64),
    segments=("placement",),
    primary_metric="policy_value_dr",
    params={"num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 100},
    capacity=0.05,
    baseline_is_probability=False,
    split=SplitConfig(),
    words={
        "category": "Offered category",
        "offer_type": "Kind of offer",
        "discount": "Discount",
        "placement": "Where it is shown",
        "parcel_late": "Tracked parcel past its promise",
        "category_in_order": "Tracked order holds the category",
    },
)
