"""Next-best offer: labels, reference categories, values, the returned-category rule, and a
training run through Feast and MLflow valued off-policy."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from aftersale.settings import Settings
from features.build.tables import build_feature_tables, publish_tables
from features.instants import watermark
from features.store.config import feature_store
from features.store.sync import apply_definitions
from models import next_best_offer as nbo
from models.policies import offers as offer_policy
from models.served.registry import CHAMPION, tracking
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN
from training.monitor import offer_policy_quality
from training.offpolicy import greedy
from training.oracle import policy_oracle as oracle
from training.policy import offer_features, train_policy
from training.trainer import TrainOptions


def test_value_pays_the_discount_out_of_the_margin() -> None:
    catalogue = nbo.Catalogue(
        categories=("books", "toys"),
        price=np.array([10.0, 40.0]),
        margin=np.array([0.3, 0.5]),
        popularity=np.array([5.0, 1.0]),
    )
    value = catalogue.value(pd.Series(["books", "toys", "toys", "ghost"]), [0.0, 0.0, 0.2, 0.0])
    np.testing.assert_allclose(value[:3], [3.0, 20.0, 12.0])
    assert np.isnan(value[3])


def tiny_tables() -> dict[str, pa.Table]:
    ts = pd.Timestamp("2025-01-01", tz="UTC")
    return {
        "products": pa.table(
            {
                "product_id": ["p1", "p2", "p3"],
                "category": ["books", "toys", "toys"],
                "price": [10.0, 40.0, 20.0],
                "margin": [0.3, 0.5, 0.5],
            }
        ),
        "orders": pa.table(
            {
                "order_id": ["o1", "o2", "o3", "o4"],
                "customer_id": ["c1", "c1", "c1", "c2"],
                "order_ts": [ts, ts + pd.Timedelta(days=1), ts + pd.Timedelta(days=10), ts],
            }
        ),
        "order_items": pa.table(
            {
                "order_id": ["o1", "o2", "o3", "o3", "o3", "o4"],
                "product_id": ["p1", "p1", "p2", "p3", "p2", "p2"],
            }
        ),
    }


def test_reference_category_is_the_most_ordered_before_the_decision() -> None:
    tables = tiny_tables()
    catalogue = nbo.Catalogue.of(tables)
    at = pd.Series(pd.to_datetime(["2025-01-05", "2025-01-12", "2025-01-01", "2025-02-01"]))
    at = at.dt.tz_localize("UTC")
    customers = pd.Series(["c1", "c1", "c2", "c9"])
    got = nbo.reference_categories(tables, catalogue, customers, at)
    # c1: two books lines by Jan 5; three toys lines on Jan 11 outnumber them. c2's order is
    # at the decision instant, so not before it; c9 never ordered: both get the best seller.
    assert list(got) == ["books", "toys", "toys", "toys"]


def test_returned_categories_are_never_recommended() -> None:
    frame = pd.DataFrame(
        {
            "offer_type": ["recommendation", "discount", "recommendation", "none"],
            "category_returns_total": [1, 1, 0, 3],
        }
    )
    allowed = offer_policy.allowed_actions(frame, 1, 4)
    np.testing.assert_array_equal(allowed, [[False, False, True, True]])
    # The returned category has by far the highest expected value; it is still not chosen.
    expected = np.array([[9.0, 8.0, 1.0, 0.5]])
    assert greedy(expected, allowed).argmax() == 2
    assert offer_policy.choose(expected, allowed, frame["offer_type"] == "none").argmax() == 2


def test_showing_nothing_is_one_of_the_options() -> None:
    # Four offers and "none" last, whose value is the customer buying anyway.
    expected = np.array(
        [
            [1.0, 3.0, 2.0, 2.5, 2.0],  # two offers beat showing nothing, one ties it
            [1.0, 0.5, 1.9, -1.0, 2.0],  # showing nothing beats every offer
            [9.0, 0.5, 3.0, np.nan, 2.0],  # the best offer is a returned category
            [2.0, 2.0, 1.0, 1.0, np.nan],  # showing nothing's value unknown: counts as 0
        ]
    )
    allowed = np.ones_like(expected, dtype=bool)
    allowed[2, 0] = False
    none = np.array([False, False, False, False, True])
    ranked = offer_policy.ranked_offers(expected, allowed, none)
    np.testing.assert_array_equal(
        ranked,
        [[1, 3, -1, -1, -1], [-1] * 5, [2, -1, -1, -1, -1], [0, 1, 2, 3, -1]],
    )
    chosen = offer_policy.choose(expected, allowed, none)
    np.testing.assert_array_equal(chosen.argmax(axis=1), [1, 4, 2, 0])
    np.testing.assert_array_equal(chosen.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="exactly one"):
        offer_policy.ranked_offers(expected, allowed, np.zeros(5, dtype=bool))


def test_the_policy_is_the_best_allowed_action_showing_nothing_included() -> None:
    # Without ties the policy is the greedy best allowed action over every action, "none"
    # included; so valuing it off-policy values what the service answers first.
    rng = np.random.default_rng(12)
    n, a = 500, 9
    expected = rng.normal(size=(n, a))
    allowed = rng.random((n, a)) < 0.7
    none = np.zeros(a, dtype=bool)
    none[-1] = True
    allowed[:, -1] = True
    chosen = offer_policy.choose(expected, allowed, none)
    np.testing.assert_array_equal(chosen, greedy(expected, allowed))
    ranked = offer_policy.ranked_offers(expected, allowed, none)
    rows = np.arange(n)
    shown = ranked[:, 0] >= 0
    assert 0 < shown.sum() < n
    np.testing.assert_array_equal(chosen[rows[shown], ranked[shown, 0]], 1.0)
    assert (chosen[~shown, -1] == 1.0).all()
    # Every ranked offer is allowed and worth more than showing nothing, best first.
    for i in range(n):
        offers = ranked[i][ranked[i] >= 0]
        assert allowed[i, offers].all()
        assert not none[offers].any()
        assert (expected[i, offers] > expected[i, -1]).all()
        assert (np.diff(expected[i, offers]) <= 0).all()
        worth = allowed[i, :-1] & (expected[i, :-1] > expected[i, -1])
        assert len(offers) == worth.sum()


@pytest.fixture(scope="module")
def events(sim_tables) -> pd.DataFrame:
    return nbo.label_events(sim_tables)


def test_label_events_label_the_seven_day_window_and_value_the_reward(events, sim_tables) -> None:
    offers = sim_tables["offers"].to_pandas().set_index("offer_id")
    assert (events[LABEL_KNOWN] - events[EVENT_TIME] == nbo.WINDOW).all()
    accepted = offers.loc[events["offer_id"], "accepted_ts"].notna().to_numpy()
    np.testing.assert_array_equal(events[LABEL].to_numpy(), accepted.astype(int))
    assert (events.loc[events[LABEL] == 0, "reward"] == 0).all()
    # An accepted plain recommendation earns its category's margin at the logged price.
    plain = events[(events[LABEL] == 1) & (events["offer_type"] == "recommendation")]
    revenue = offers.loc[plain["offer_id"], "revenue"].to_numpy()
    catalogue = nbo.Catalogue.of(sim_tables)
    margin = catalogue.margin[catalogue.code(plain["category"])]
    np.testing.assert_allclose(plain["reward"].to_numpy(), revenue * margin)
    # Every control decision has a reference category; windows still open are left out.
    assert events.loc[events["offer_type"] == "none", "category"].notna().all()
    end = pd.to_datetime(offers["ts"], utc=True).max()
    assert (events[LABEL_KNOWN] <= end).all()


def test_a_few_decisions_get_the_answers_they_get_among_all(events, sim_tables) -> None:
    """The reference category and past returns of a sample of decisions, read from their
    customers' rows alone, are those of the same decisions computed among all of them."""
    from training.policy import returned_before

    catalogue = nbo.Catalogue.of(sim_tables)
    every = nbo.reference_categories(
        sim_tables, catalogue, events["customer_id"], events[EVENT_TIME]
    )
    returned = returned_before(sim_tables, events)
    assert returned.any()
    # Decisions after a return among them, so that both answers are asked of the few.
    few = pd.concat([events[returned].head(10), events[~returned].sample(50, random_state=3)])
    got = nbo.reference_categories(sim_tables, catalogue, few["customer_id"], few[EVENT_TIME])
    pd.testing.assert_series_equal(got, every.loc[few.index])
    positions = events.index.get_indexer(few.index)
    np.testing.assert_array_equal(returned_before(sim_tables, few), returned[positions])
    # And each is what the raw tables say, row by row: a return of the customer's own order
    # of that category requested before the decision.
    returns = sim_tables["returns"].to_pandas()
    orders = sim_tables["orders"].to_pandas().set_index("order_id")["customer_id"]
    category = sim_tables["products"].to_pandas().set_index("product_id")["category"]
    expected = [
        any(
            orders[r.order_id] == row.customer_id
            and category[r.product_id] == row.category
            and pd.Timestamp(r.requested_ts) < pd.Timestamp(row.event_timestamp)
            for r in returns.itertuples()
        )
        for row in few.itertuples()
    ]
    np.testing.assert_array_equal(returned_before(sim_tables, few), expected)


def test_parcel_late_means_past_the_promise_and_not_yet_delivered() -> None:
    day = 86_400.0
    now = pd.Timestamp("2025-03-10", tz="UTC")
    t = now.timestamp()
    frame = pd.DataFrame(
        {
            "category": ["toys"] * 4,
            "orders_total": [2, 2, 2, 0],
            "category_orders_total": [1, 1, np.nan, np.nan],
            "order_categories": ["toys|books", "books", None, None],
            # Past the promise and undelivered; delivered; not yet due; no tracked order.
            "order_promised_epoch": [t - day, t - day, t + day, np.nan],
            "order_delivered_epoch": [np.nan, t - 2 * day, np.nan, np.nan],
        }
    )
    out = nbo.decision_features(frame, now)
    assert out["parcel_late"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert out["category_in_order"].tolist() == [1.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(out["category_order_share"].to_numpy()[:3], [0.5, 0.5, 0.0])
    assert np.isnan(out["category_order_share"].iloc[3])


@pytest.mark.slow
def test_training_values_the_policy_registers_it_and_never_offers_a_returned_category(
    sim_tables, sim_dir, tmp_path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    publish_tables(build_feature_tables(sim_tables), settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train_policy(
        nbo.SPEC,
        store,
        settings,
        TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=200),
    )

    metrics = result.metrics
    for name in ("model", "popularity", "random"):
        assert np.isfinite(metrics[f"policy_{name}_dr"])
        assert metrics[f"policy_{name}_dr_low"] <= metrics[f"policy_{name}_dr"]
    assert result.baseline_metrics["policy_value_dr"] == metrics["policy_popularity_dr"]
    scores = result.scores
    chosen = scores[scores["model_policy"] == 1]
    assert len(chosen) == scores["decision"].nunique()
    assert chosen["allowed"].all()
    assert metrics["model_returned_category_share"] == 0.0
    # The policy valued shows an offer only when it is worth more than showing nothing.
    assert metrics["model_uplift_mean"] >= 0.0
    q = (scores["p_hat"] * scores["value"]).to_numpy().reshape(-1, len(scores) // len(chosen))
    picked = chosen.assign(q=chosen["p_hat"] * chosen["value"]).set_index("decision")
    shown = picked["offer_type"] != nbo.NONE
    assert (picked.loc[shown, "q"].to_numpy() > q[picked.index[shown], -1]).all()
    assert result.promotion is not None
    assert result.promotion.promoted
    with tracking(uri):
        client = mlflow.MlflowClient()
        champion = client.get_model_version_by_alias(nbo.NAME, CHAMPION)
        run = client.get_run(champion.run_id)
        artifacts = {a.path for a in client.list_artifacts(champion.run_id, "evaluation")}
    assert "test_policy_model_dr" in run.data.metrics
    assert "evaluation/policy_values.csv" in artifacts
    # The next run is judged against the champion on the same decisions: the same data train
    # the same model, whose policy is worth exactly the champion's, so it does not beat it.
    again = train_policy(
        nbo.SPEC,
        store,
        settings,
        TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=50),
    )
    assert again.promotion.champion_version == result.version
    assert again.promotion.champion_value == pytest.approx(again.metrics["policy_value_dr"])
    assert again.promotion.champion_value == pytest.approx(metrics["policy_value_dr"])
    assert not again.promotion.promoted, again.promotion.reason

    # The simulator's truth values every policy exactly; nothing beats the oracle.
    comparison = oracle(result, sim_dir / "_truth")
    assert comparison.rows == scores["decision"].nunique()
    assert comparison.oracle >= comparison.model
    assert comparison.oracle >= comparison.baseline

    # The monitor values the same policy on the newest 28 days of closed offers.
    end = watermark(dict(sim_tables), happened=True)
    train_span = tuple(
        pd.Timestamp(result.split[f"split_train_{side}"]) for side in ("start", "end")
    )
    tested = {f"test_{k}": v for k, v in metrics.items()}
    # Other decisions read along the valuation get what a read of their own gives.
    asked = nbo.label_events(dict(sim_tables)).iloc[::50].reset_index(drop=True)
    valued = offer_policy_quality(
        result.model, nbo.SPEC, store, sim_tables, end, 28, train_span, tested, read_along=[asked]
    )
    (along,) = valued.read_along
    alone, _ = offer_features(nbo.SPEC, store, asked)
    pd.testing.assert_frame_equal(along, alone)
    assert len(along) == len(asked) > 0
    quality = valued.figures
    raw = sim_tables["offers"].to_pandas()
    ts = pd.to_datetime(raw["ts"], utc=True)
    accepted = pd.to_datetime(raw["accepted_ts"], utc=True)
    data_end = max(ts.max(), accepted.max())
    closed = ts[ts + pd.Timedelta(days=7) <= data_end]
    assert quality["policy_window_end"] == closed.max()
    in_window = closed[closed > closed.max() - pd.Timedelta(days=28)]
    # Decisions whose logged action is new to the training window cannot be valued.
    assert 0.9 * len(in_window) <= quality["policy_rows"] <= len(in_window)
    assert quality["policy_value_dr_low"] <= quality["policy_value_dr"]
    assert quality["policy_value_dr"] <= quality["policy_value_dr_high"]
    assert quality["test_policy_value_dr"] == metrics["policy_value_dr"]
    for key in ("policy_popularity_dr", "policy_random_dr", "policy_logging_mean"):
        assert np.isfinite(quality[key]), key
    # Bounded, a seeded sample of the window's decisions is valued: the same one each run.
    limit = len(in_window) // 3
    bounded = [
        offer_policy_quality(
            result.model,
            nbo.SPEC,
            store,
            sim_tables,
            end,
            28,
            train_span,
            tested,
            max_decisions=limit,
        ).figures
        for _ in range(2)
    ]
    assert 0.9 * limit <= bounded[0]["policy_rows"] <= limit
    assert bounded[0]["policy_value_dr"] == bounded[1]["policy_value_dr"]
    assert bounded[0]["policy_value_dr_low"] <= bounded[0]["policy_value_dr"]
    assert bounded[0]["policy_value_dr"] <= bounded[0]["policy_value_dr_high"]


@pytest.mark.parametrize("seed", range(4))
def test_category_in_order_is_membership_in_the_split_order(seed) -> None:
    """Row by row, `category in held.split("|")`: names that are prefixes or parts of
    others, empty names, missing categories and orders, repeated parts, categorical and
    plain columns."""
    rng = np.random.default_rng(seed)
    n = 3_000
    names = np.array(["toys", "toys_games", "games", "", "home", "bed|bath", "x"], dtype=object)
    category = pd.Series(rng.choice(names, n), dtype=object)
    category[rng.random(n) < 0.1] = None
    held = pd.Series(
        ["|".join(rng.choice(names, rng.integers(0, 4))) for _ in range(n)], dtype=object
    )
    held[rng.random(n) < 0.1] = None
    if seed % 2:
        category = category.astype("category")
    expected = np.array(
        [
            c is not None and not pd.isna(c) and c in (t or "").split("|")
            for c, t in zip(category, held, strict=True)
        ],
        dtype=np.float64,
    )
    np.testing.assert_array_equal(nbo.category_in_order(category, held), expected)
    assert 0 < expected.sum() < n
    none = pd.Series([None] * 5, dtype=object)
    np.testing.assert_array_equal(nbo.category_in_order(none, held[:5]), np.zeros(5))


def test_decision_record_equals_decision_features() -> None:
    rng = np.random.default_rng(4)
    now = pd.Timestamp("2025-06-01 12:00", tz="UTC")
    t = now.timestamp()
    n = 40

    def maybe(values):
        return np.where(rng.random(n) < 0.3, np.nan, values)

    frame = pd.DataFrame(
        {
            "category": rng.choice(["toys", "books", "home"], n),
            "orders_total": rng.integers(0, 5, n).astype(float),
            "monetary_total": maybe(rng.uniform(0, 500, n)),
            "category_orders_total": maybe(rng.integers(1, 4, n).astype(float)),
            "category_spend_total": maybe(rng.uniform(0, 200, n)),
            "last_order_epoch": maybe(t - rng.uniform(0, 1e7, n)),
            "signup_epoch": t - rng.uniform(1e7, 5e7, n),
            "category_last_purchase_epoch": maybe(t - rng.uniform(0, 1e7, n)),
            "order_categories": rng.choice(["toys|books", "home", None], n),
            "order_promised_epoch": maybe(t + rng.uniform(-5e5, 5e5, n)),
            "order_delivered_epoch": maybe(t - rng.uniform(0, 1e5, n)),
        }
    )
    expected = nbo.decision_features(frame, now)
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    got = pd.DataFrame([nbo.decision_record(r, t) for r in records])
    for column in (
        "days_since_last_order",
        "tenure_days",
        "days_since_category_purchase",
        "category_spend_share",
        "parcel_late",
        "category_in_order",
        "category_order_share",
    ):
        np.testing.assert_allclose(
            got[column].astype(float), expected[column].astype(float), err_msg=column
        )


def test_policy_round_trips_and_names_the_reference_category() -> None:
    catalogue = nbo.Catalogue(
        categories=("books", "toys"),
        price=np.array([10.0, 40.0]),
        margin=np.array([0.3, 0.5]),
        popularity=np.array([5.0, 1.0]),
    )
    events = pd.DataFrame(
        {"offer_type": ["recommendation", "discount", "none"], "discount": [0.0, 0.1, 0.0]}
    )
    policy = nbo.Policy(nbo.action_space(events, catalogue), catalogue)
    back = nbo.Policy.from_dict(policy.to_dict())
    pd.testing.assert_frame_equal(back.actions, policy.actions)
    assert back.catalogue.categories == catalogue.categories
    assert back.reference_category({"toys": {"category_orders_total": 2}}) == "toys"
    assert back.reference_category({}) == "books"


def test_showing_nothing_and_the_allowed_mask_count_unknowns_as_numpy_does() -> None:
    """The request path's fast forms equal `np.nan_to_num(..., nan=0.0)`'s reading."""
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.5, -3.0, 1e308, -1e308])
    assert (offer_policy.no_offer_values(values) == np.nan_to_num(values, nan=0.0)).all()
    kinds = np.array(["discount"] * len(values), dtype=object)
    kinds[3] = "none"
    expected = (np.nan_to_num(values, nan=0.0) <= 0) | (kinds == "none")
    assert (offer_policy.allowed_mask(values, kinds) == expected).all()
