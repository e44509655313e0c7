"""The service end to end: a small business ingested, featurised, trained and batch-scored
through the flows, then served through the ASGI app and through a real `bentoml serve`."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

TOKEN_SECRET = "tracking-token-secret-for-tests-0123456789"
# The served process's tracking-page limit per client (`server`).
SERVED_RATE_LIMIT = 30


def page(order_id: str, **fields) -> dict:
    """A tracking-page request for the order, with the shop's token for it."""
    from serving.tokens import mint

    return {"order_id": order_id, "token": mint(order_id, TOKEN_SECRET.encode()), **fields}


@pytest.fixture(scope="module")
def served_data(tmp_path_factory, prefect_harness, sim_dir, service_key, reader_key):
    """A data folder with champions, a materialised online store and an outreach queue; the
    service's keys: `service_key` with every scope, `reader_key` with score:read alone."""
    from flows.build_features import build_features
    from flows.ingest import ingest
    from flows.score_batch import score_batch
    from flows.train import train

    folder = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        patch.setenv(
            "AFTERSALE_API_KEYS",
            f"tests:score:read+outreach:read+admin:{service_key},reader:score:read:{reader_key}",
        )
        patch.setenv("AFTERSALE_TOKEN_SECRET", TOKEN_SECRET)
        # The in-process app's tracking-page limit stays out of the tests' way; the served
        # process gets a small one (`server`).
        patch.setenv("AFTERSALE_TRACKING_RATE_LIMIT", "100000/minute")
        # The demo tracking page (`test_the_tracking_page_in_a_browser_shows_what_the_api_answers`).
        patch.setenv("AFTERSALE_DEMO_PAGES", "true")
        ingest(source="folder", path=sim_dir)
        build_features(materialize_to_online=True)
        train(models=["delay_risk", "churn", "next_best_offer", "delivery_estimate"])
        queue_path = score_batch()
        meta = pq.read_schema(queue_path).metadata[b"aftersale"]
        as_of = pd.Timestamp(json.loads(meta)["as_of"])
        patch.setenv("AFTERSALE_AS_OF", as_of.isoformat())
        yield folder, queue_path, as_of


@pytest.fixture(scope="module")
def ids(served_data) -> dict[str, list[str]]:
    folder, _, as_of = served_data
    raw = folder / "raw" / "current"
    # Parcels in transit at the decision instant and not yet due, by the raw table: each is
    # answered with a risk and a window (the queue may hold no delay notice for them, its
    # customers having heard from outreach within the frequency cap).
    ships = pq.read_table(raw / "shipments.parquet").to_pandas()
    in_transit = (
        (ships["shipped_ts"] <= as_of)
        & (ships["delivered_ts"].isna() | (ships["delivered_ts"] > as_of))
        & (ships["promised_ts"] > as_of)
    )
    shipments = ships[in_transit].sort_values("shipped_ts", ascending=False)["shipment_id"]
    shipments = shipments.tolist()
    assert len(shipments) >= 3
    customers = pq.read_table(raw / "customers.parquet").column("customer_id").to_pylist()
    orders = pq.read_table(raw / "orders.parquet").sort_by([("order_ts", "descending")])
    return {
        "shipments": shipments[:3],
        "customers": customers[:3],
        "orders": orders.column("order_id").to_pylist()[:3],
        "order_customers": orders.column("customer_id").to_pylist()[:3],
    }


@pytest.fixture(scope="module")
def client(served_data, service_key):
    """The ASGI app, every request carrying the key with every scope."""
    from starlette.testclient import TestClient

    from serving.service import Aftersale

    headers = {"Authorization": f"Bearer {service_key}"}
    with TestClient(Aftersale.to_asgi(), headers=headers) as test_client:
        yield test_client


# Route, method and body of every route that needs a key, with its scope.
PROTECTED = [
    ("/v1/score/delay", "post", {"shipment_ids": ["s1"]}, "score:read"),
    ("/v1/score/churn", "post", {"customer_ids": ["c1"]}, "score:read"),
    ("/v1/explain", "post", {"model": "churn", "ids": ["c1"]}, "score:read"),
    ("/v1/outreach/queue", "post", {"limit": 1}, "outreach:read"),
    ("/v1/models", "get", None, "admin"),
    ("/v1/admin/reload", "post", None, "admin"),
]


@pytest.mark.parametrize(("route", "method", "body", "scope"), PROTECTED)
def test_a_protected_route_needs_a_key_with_its_scope(
    client, reader_key, service_key, route, method, body, scope
) -> None:
    """No key or a wrong one: 401 naming the scheme; a key without the scope: 403; the key
    in either header: the route answers."""

    def call(headers: dict[str, str]):
        if method == "get":
            return client.get(route, headers=headers)
        return client.post(route, json=body, headers=headers)

    missing = call({"Authorization": ""})
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "API key" in missing.json()["error"]
    assert call({"Authorization": "Bearer not-a-key-of-this-service"}).status_code == 401
    as_reader = call({"Authorization": f"Bearer {reader_key}"})
    if scope == "score:read":
        assert as_reader.status_code == 200, as_reader.text
    else:
        assert as_reader.status_code == 403, as_reader.text
        assert scope in as_reader.json()["error"]
    assert call({"Authorization": "", "X-API-Key": service_key}).status_code == 200


@pytest.mark.parametrize("route", ["/livez", "/readyz", "/metrics", "/docs.json"])
def test_probes_metrics_and_the_api_document_need_no_key(client, route) -> None:
    assert client.get(route, headers={"Authorization": ""}).status_code == 200


def test_the_tracking_page_needs_the_shops_token_for_that_order(client, ids) -> None:
    """No token, a token for another order, an altered or expired one: 401 naming no order
    and no customer; the order's own token: 200."""
    from serving.tokens import mint

    order, other = ids["orders"][0], ids["orders"][1]
    secret = TOKEN_SECRET.encode()
    expired = mint(order, secret, ttl_s=60, now=time.time() - 3_600)
    valid = mint(order, secret)
    altered = valid[:-2] + ("AA" if not valid.endswith("AA") else "BB")
    for token in (None, mint(other, secret), altered, expired, "v1.1.x"):
        body = {"order_id": order} if token is None else {"order_id": order, "token": token}
        denied = client.post("/v1/recommend", json=body)
        assert denied.status_code == 401, (token, denied.text)
        assert order not in denied.text
        assert ids["order_customers"][0] not in denied.text
    # An unknown order's page is refused alike without its token: ids cannot be probed.
    probe = client.post("/v1/recommend", json={"order_id": "no-such-order", "token": valid})
    wrong = client.post("/v1/recommend", json={"order_id": order, "token": mint(other, secret)})
    assert probe.status_code == wrong.status_code == 401
    assert probe.json() == wrong.json()
    assert client.post("/v1/recommend", json=page(order)).status_code == 200


@pytest.mark.parametrize(
    ("model", "route", "field"),
    [
        ("churn", "/v1/score/churn", "customer_ids"),
        ("delay_risk", "/v1/score/delay", "shipment_ids"),
    ],
)
def test_explain_adds_up_to_the_served_score(
    client, ids, served_runtime, model, route, field
) -> None:
    """Every feature's contribution, largest first, plus the base value is the model's
    margin, and the score is what the scoring route answers for the id at the same instant;
    an unknown id is answered as such."""
    asked = [*(ids["customers"] if model == "churn" else ids["shipments"]), "no-such-id"]
    explained = client.post("/v1/explain", json={"model": model, "ids": asked})
    assert explained.status_code == 200, explained.text
    scored = client.post(route, json={field: asked}).json()["results"]
    body = explained.json()
    assert body["model"]["name"] == model
    results = body["results"]
    assert [r["id"] for r in results] == asked
    assert results[-1]["status"] == "unknown_id"
    assert results[-1]["contributions"] == []
    known = [r for r in results if r["status"] == "ok"]
    assert known
    for result, score in zip(results, scored, strict=True):
        assert result["status"] == score["status"]
        if result["status"] != "ok":
            continue
        contributions = [c["contribution"] for c in result["contributions"]]
        assert result["base_value"] + sum(contributions) == pytest.approx(result["output"])
        assert result["score"] == pytest.approx(score["probability"], rel=1e-9)
        magnitudes = [abs(c) for c in contributions]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert len({c["feature"] for c in result["contributions"]}) == len(contributions) > 5
        assert all(c["text"] for c in result["contributions"])
        # The margin through the sigmoid and the calibration is the score.
        assert _through_link(served_runtime, model, result["output"]) == pytest.approx(
            result["score"], rel=1e-9
        )


@pytest.fixture(scope="module")
def served_runtime(served_data):
    """A runtime over the served folder, for the champions' own calibration."""
    return _runtime(served_data)


def _through_link(runtime, model: str, margin: float, arm: str | None = None) -> float:
    """The served probability of a margin: the sigmoid, then the champion's calibration (of
    the row's arm, `arm`, for a model calibrated per arm: only that input is read)."""
    import numpy as np

    served = runtime.recommender.model if model == "next_best_offer" else runtime.models[model]
    x = None
    arms = getattr(served.model, "arm_calibration", None)
    if arms is not None:
        layout = served.model.layout
        x = np.full((1, len(layout.features)), np.nan)
        x[0, list(layout.features).index(arms.feature)] = layout.codes[arms.feature][arm]
    return float(served.probability_from_contributions(np.array([[margin]]), x)[0])


def test_explain_adds_up_to_the_top_offer_the_page_answers(
    client, served_data, served_runtime
) -> None:
    """For an order, the top offer of its tracking page: its category and offer, every
    feature's contribution adding up to the acceptance margin, and the acceptance
    probability `/v1/recommend` answers for it at the same instant; an unknown order is
    answered as such."""
    orders = _raw(served_data, "orders").sort_values("order_ts", ascending=False)
    asked = [*orders["order_id"].head(20), "no-such-order"]
    explained = client.post("/v1/explain", json={"model": "next_best_offer", "ids": asked})
    assert explained.status_code == 200, explained.text
    body = explained.json()
    assert body["model"]["name"] == "next_best_offer"
    results = body["results"]
    assert [r["id"] for r in results] == asked
    assert results[-1]["status"] == "unknown_id"
    explained_ok = 0
    for result in results[:-1]:
        page_answer = client.post("/v1/recommend", json=page(result["id"], k=1)).json()
        offers = page_answer["offers"]
        if page_answer["cold_start"]:
            assert result["status"] == "cold_start", result
            continue
        if not offers:
            assert result["status"] == "no_offer", result
            continue
        top = offers[0]
        assert result["status"] == "ok", result
        assert (result["category"], result["offer_type"]) == (top["category"], top["offer_type"])
        assert result["discount"] == pytest.approx(top["discount"])
        contributions = [c["contribution"] for c in result["contributions"]]
        assert result["base_value"] + sum(contributions) == pytest.approx(result["output"])
        assert result["score"] == pytest.approx(top["acceptance_probability"], rel=1e-9)
        link = _through_link(served_runtime, "next_best_offer", result["output"], top["offer_type"])
        assert link == pytest.approx(result["score"], rel=1e-9)
        magnitudes = [abs(c) for c in contributions]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert all(c["text"] for c in result["contributions"])
        explained_ok += 1
    assert explained_ok > 0


def test_explain_of_the_uplift_without_its_champion_is_a_503(client) -> None:
    response = client.post("/v1/explain", json={"model": "outreach_uplift", "ids": ["c1"]})
    assert response.status_code == 503, response.text
    assert "uplift explanations unavailable" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "no_such_model", "ids": ["c1"]},
        {"model": "churn", "ids": []},
        {"model": "next_best_offer", "ids": [f"o{i}" for i in range(101)]},
        {"model": "churn"},
        {"model": "churn", "ids": ["c1"], "extra": 1},
    ],
)
def test_explain_rejects_bad_requests_with_400(client, body) -> None:
    response = client.post("/v1/explain", json=body)
    assert response.status_code == 400, response.text


def test_batch_queue_is_ranked_with_reasons(served_data) -> None:
    _, queue_path, _ = served_data
    queue = pq.read_table(queue_path).to_pandas()
    assert len(queue) > 0
    assert (queue["reason"].str.len() > 0).all()
    # Due delay notices (estimate past the promise) come first, then by priority.
    due = queue["reason"].str.startswith("Expected ")
    assert not (due & ~due.cummin()).any()
    assert queue.loc[~due, "priority"].is_monotonic_decreasing
    history = pq.read_table(queue_path.parent / "outreach_history.parquet").to_pandas()
    assert len(history) == len(queue)


def test_score_delay_answers_known_and_unknown_ids(client, ids, served_data) -> None:
    asked = [*ids["shipments"], "no-such-shipment"]
    response = client.post("/v1/score/delay", json={"shipment_ids": asked})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["shipment_id"] for r in body["results"]] == asked
    assert body["results"][-1]["status"] == "unknown_id"
    known = body["results"][0]
    assert known["status"] == "ok"
    assert 0 <= known["probability"] <= 1
    assert known["band"] in ("low", "medium", "high")
    window = known["delivery_window"]
    assert window is not None
    assert window["earliest"] <= window["most_likely"] <= window["latest"]
    assert window["earliest_date"] <= window["most_likely_date"] <= window["latest_date"]
    assert window["coverage"] == pytest.approx(0.9)
    # The dates are the customer's own: the zone of the shipment's customer.
    raw = served_data[0] / "raw" / "current"
    ships = pq.read_table(raw / "shipments.parquet").to_pandas().set_index("shipment_id")
    orders = pq.read_table(raw / "orders.parquet").to_pandas().set_index("order_id")
    customers = pq.read_table(raw / "customers.parquet").to_pandas().set_index("customer_id")
    customer = orders.loc[ships.loc[known["shipment_id"], "order_id"], "customer_id"]
    assert window["timezone"] == customers.loc[customer, "timezone"]
    assert window["timezone_known"] is True
    for kind in ("earliest", "most_likely", "latest"):
        instant = pd.Timestamp(window[kind]).tz_convert(window["timezone"])
        assert instant.date().isoformat() == window[f"{kind}_date"]
    assert window["text"].startswith(("arrives between ", "arrives on "))
    contributions = [r["contribution"] for r in known["reasons"]]
    assert contributions == sorted(contributions, reverse=True)


def test_score_churn_names_the_contact_reason(client, ids) -> None:
    response = client.post("/v1/score/churn", json={"customer_ids": ids["customers"]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert all(r["status"] == "ok" for r in results)
    assert all(r["reasons"] and r["reasons"][0]["text"] for r in results)
    assert {"contact_reason", "probability", "risk_score"} <= set(results[0])


def test_answers_asked_again_come_from_the_memo_unchanged(client, ids) -> None:
    """Scores, reasons and windows asked for again are answered from each model's memo,
    the same to the last digit; /v1/models counts the rows found there."""

    def memos() -> dict[str, dict]:
        return {m["name"]: m["memo"] for m in client.get("/v1/models").json()["models"]}

    before = memos()
    assert before["next_best_offer"] is None
    asks = [
        ("/v1/score/churn", {"customer_ids": ids["customers"]}),
        ("/v1/score/delay", {"shipment_ids": ids["shipments"]}),
    ]
    for path, body in asks:
        first, again = (client.post(path, json=body).json() for _ in range(2))
        assert again["results"] == first["results"]
    after = memos()
    for name in ("churn", "delay_risk", "delivery_estimate"):
        assert after[name]["hits"] > before[name]["hits"], name
        assert after[name]["rows"] >= 1
    assert after["churn"]["hits"] - before["churn"]["hits"] >= len(ids["customers"])


def test_online_rows_asked_again_are_found_kept_and_counted(client, ids) -> None:
    """An order's offers asked twice read its rows from the store once: /v1/models counts
    the second ask's rows as found kept, for the order, its customer and each category."""

    def counts() -> dict[str, dict]:
        return {r["reader"]: r for r in client.get("/v1/models").json()["online_rows"]}

    order = ids["orders"][0]
    first = client.post("/v1/recommend", json=page(order)).json()
    before = counts()
    assert client.post("/v1/recommend", json=page(order)).json()["offers"] == first["offers"]
    after = counts()
    for part in ("orders", "customers", "categories"):
        name = f"next_best_offer:{part}"
        assert after[name]["found"] > before[name]["found"], name
        assert after[name]["read"] == before[name]["read"], name
        assert after[name]["kept"] >= 1
    assert {"churn", "delay_risk"} <= set(after)


def test_answers_made_ahead_are_found_at_the_first_ask_and_equal_fresh_ones(
    served_data,
) -> None:
    """Every parcel in transit (by the raw tables) and every customer the queue names is
    answered ahead into the memos; a first ask finds its answer there, the same as a
    service without a memo computes."""
    _, queue_path, as_of = served_data
    ahead = _runtime(served_data, answer_memo_rows=20_000)
    fresh = _runtime(served_data, answer_memo_rows=0)
    done = ahead.answer_ahead()

    ships = _raw(served_data, "shipments")
    moving = ships[
        (ships["shipped_ts"] <= as_of)
        & (ships["delivered_ts"].isna() | (ships["delivered_ts"] > as_of))
    ]["shipment_id"].tolist()
    scored = [r.shipment_id for r in fresh.score_delay(moving).results if r.status == "ok"]
    named = pq.read_table(queue_path).column("customer_id").unique().to_pylist()
    ordered = [r.customer_id for r in fresh.score_churn(named).results if r.status == "ok"]
    assert len(scored) >= 3
    assert len(ordered) >= 3
    assert done == {"delay_risk": len(scored), "churn": len(ordered)}

    memos = {
        "delay_risk": ahead.models["delay_risk"].memo,
        "churn": ahead.models["churn"].memo,
        "delivery_estimate": ahead.window.memo,
    }
    expected_ahead = {"delay_risk": len(scored), "churn": len(ordered)}
    expected_ahead["delivery_estimate"] = len(scored)
    for name, memo in memos.items():
        assert (memo.hits, memo.misses) == (0, 0), name
        # Each row computed once: fewer where rows of two ids share every decision.
        assert 1 <= memo.ahead <= expected_ahead[name], name
    # One at a time, as tracking pages and schedulers ask: all found, all equal.
    for shipment in scored[:20]:
        assert ahead.score_delay([shipment]) == fresh.score_delay([shipment])
    for customer in ordered[:20]:
        assert ahead.score_churn([customer]) == fresh.score_churn([customer])
    for name, memo in memos.items():
        asked = len(ordered[:20]) if name == "churn" else len(scored[:20])
        assert (memo.hits, memo.misses) == (asked, 0), name


def test_answering_ahead_again_finds_the_rows_that_changed_since(served_data, caplog) -> None:
    """Answering ahead every few moments, at the instant of each pass: once the clock has
    moved on six hours, the next passes compute exactly the rows whose features crossed a
    split since (one per new key), and every first ask at the new instant finds its answer
    in the memo, the same as a service without a memo computes then. The stop event ends
    the passes."""
    from features.build.derived import derive_record
    from serving.runtime import answer_ahead_quietly

    def passes() -> int:
        return sum("answered ahead in" in r.getMessage() for r in caplog.records)

    def wait_for(done) -> None:
        deadline = time.monotonic() + 120
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert done()

    caplog.set_level("INFO", logger="serving.runtime")
    _, _, as_of = served_data
    later = as_of + pd.Timedelta(hours=6)
    ahead = _runtime(served_data, answer_memo_rows=20_000)
    fresh = _runtime(served_data, answer_memo_rows=0, as_of=later.to_pydatetime())
    model = ahead.models["delay_risk"]
    memo = model.memo
    ships = _raw(served_data, "shipments")
    moving = ships[
        (ships["shipped_ts"] <= later)
        & (ships["delivered_ts"].isna() | (ships["delivered_ts"] > later))
    ]["shipment_id"].tolist()
    scored = [r.shipment_id for r in fresh.score_delay(moving).results if r.status == "ok"]
    assert len(scored) >= 3
    rows = ahead._rows("delay_risk", scored, later)
    keys_later = set(
        memo.key.keys(
            model.matrix_from_records([derive_record(row, later.timestamp()) for row in rows])
        )
    )

    stop = threading.Event()
    thread = threading.Thread(target=answer_ahead_quietly, args=(ahead, stop, 0.05))
    thread.start()
    try:
        wait_for(lambda: passes() >= 1)
        first, seen = memo.ahead, set(memo._answers)
        assert first > 0
        ahead.settings = ahead.settings.model_copy(update={"as_of": later.to_pydatetime()})
        new_keys = keys_later - seen
        assert new_keys, "six hours on, some parcel's features should cross a split"
        after_move = passes()
        wait_for(lambda: passes() >= after_move + 2)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert memo.ahead - first == len(new_keys)
    before = (memo.hits, memo.misses)
    for shipment in scored:
        assert ahead.score_delay([shipment]) == fresh.score_delay([shipment])
    assert (memo.hits - before[0], memo.misses - before[1]) == (len(scored), 0)


def test_the_service_answers_ahead_as_it_starts(client) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        models = {m["name"]: m["memo"] for m in client.get("/v1/models").json()["models"]}
        if models["delay_risk"]["answered_ahead"] and models["churn"]["answered_ahead"]:
            break
        time.sleep(0.5)
    assert models["delay_risk"]["answered_ahead"] > 0
    assert models["churn"]["answered_ahead"] > 0
    assert models["delivery_estimate"]["answered_ahead"] > 0


def test_a_customer_who_never_ordered_is_answered_without_a_score(served_data) -> None:
    """A customer with no order by the decision instant (by the raw tables) is outside the
    churn model's population: the churn answer and its explanation say `no_order`, with no
    score, reasons or action, as unknown ids are answered; one with an order is scored."""
    customers = _raw(served_data, "customers").set_index("customer_id")
    first_order = _raw(served_data, "orders").groupby("customer_id")["order_ts"].min()
    # Every customer of the data orders by its end: decide halfway through the longest wait
    # between a signup and a first order, when that customer and others had none yet.
    waited = (first_order - customers["signup_ts"].reindex(first_order.index)).sort_values()
    at = customers.loc[waited.index[-1], "signup_ts"] + waited.iloc[-1] / 2
    first = first_order.reindex(customers.index)
    signed_up = customers["signup_ts"] <= at
    never = customers.index[signed_up & ~(first <= at)].tolist()[:5]
    ordered = customers.index[signed_up & (first < at)].tolist()[:1]
    assert never, "the fixture data holds no customer without an order at the instant"
    assert ordered
    asked = [*never, *ordered, "no-such-customer"]
    expected = ["no_order"] * len(never) + ["ok", "unknown_id"]
    runtime = _runtime(served_data, as_of=at.to_pydatetime())
    answers = runtime.score_churn(asked).model_dump(mode="json")["results"]
    assert [a["status"] for a in answers] == expected
    for answer in answers[: len(never)]:
        assert pd.Timestamp(answer["features_as_of"]) <= at
        assert answer["status_reason"].startswith("No order yet")
        for field in ("probability", "risk_score", "band", "contact_reason", "best_action"):
            assert answer[field] is None, (field, answer)
        assert answer["best_action_uplift"] is None
        assert answer["reasons"] == []
    assert 0 <= answers[len(never)]["probability"] <= 1
    explained = runtime.explain("churn", asked).model_dump(mode="json")["results"]
    assert [r["status"] for r in explained] == expected
    for result in explained[: len(never)]:
        assert result["score"] is None
        assert result["contributions"] == []


def test_recommend_answers_offers_without_personal_data(client, ids) -> None:
    for order_id, customer_id in zip(ids["orders"], ids["order_customers"], strict=True):
        response = client.post("/v1/recommend", json=page(order_id, k=2))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["order_id"] == order_id
        assert customer_id not in response.text
        if body["cold_start"]:
            continue
        offers = body["offers"]
        # None when showing nothing is worth more than every offer.
        assert len(offers) <= 2
        assert all(o["uplift_over_no_offer"] > 0 for o in offers)
        assert [o["rank"] for o in offers] == list(range(1, len(offers) + 1))
        values = [o["expected_value"] for o in offers]
        assert values == sorted(values, reverse=True)


def test_recommend_flags_a_cold_start_for_an_unknown_order(client) -> None:
    response = client.post("/v1/recommend", json=page("no-such-order"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cold_start"] is True
    assert len(body["offers"]) == 3


def test_outreach_queue_filters_and_limits(client) -> None:
    everything = client.post("/v1/outreach/queue", json={"limit": 10_000}).json()
    assert everything["total"] == len(everything["actions"]) > 0
    first = client.post("/v1/outreach/queue", json={"limit": 2}).json()
    assert first["actions"] == everything["actions"][:2]
    email = client.post("/v1/outreach/queue", json={"limit": 50, "channel": "email"}).json()
    assert all(a["channel"] == "email" for a in email["actions"])
    region = everything["actions"][0]["region"]
    local = client.post("/v1/outreach/queue", json={"limit": 50, "region": region}).json()
    assert local["actions"]
    assert all(a["region"] == region for a in local["actions"])


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/score/delay", {"shipment_ids": []}, "shipment_ids"),
        ("/v1/score/delay", {"shipment_ids": [7]}, "shipment_ids"),
        ("/v1/score/delay", {"shipment_ids": ["s"] * 101}, "shipment_ids"),
        ("/v1/score/delay", {}, "shipment_ids"),
        ("/v1/score/churn", {"customer_ids": "c1"}, "customer_ids"),
        ("/v1/score/churn", {"customer_ids": ["c1"], "colour": "red"}, "colour"),
        ("/v1/recommend", {}, "order_id"),
        ("/v1/recommend", {"order_id": ""}, "order_id"),
        ("/v1/recommend", {"order_id": "o1", "k": 0}, "k"),
        ("/v1/recommend", {"order_id": "o1", "customer_id": "c1"}, "customer_id"),
        ("/v1/outreach/queue", {"limit": -1}, "limit"),
        ("/v1/outreach/queue", {"limit": "many"}, "limit"),
        ("/v1/outreach/queue", {"channel": "fax"}, "channel"),
        ("/v1/outreach/queue", {"region": "Atlantis"}, "region"),
        ("/v1/outreach/queue", {"segment": "vip"}, "segment"),
        ("/v1/outreach/queue", {"as_of": "1999-01-01T00:00:00Z"}, "as_of"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client, path, body, field) -> None:
    response = client.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text


def test_malformed_json_is_a_400(client) -> None:
    response = client.post(
        "/v1/score/churn", content=b"{customer_ids: [", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "json_invalid" in response.text


class _FlakyStore:
    """The real store, whose online reads fail while `down` is set."""

    def __init__(self, store) -> None:
        self.store = store
        self.down = False

    def __getattr__(self, name):
        return getattr(self.store, name)

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("connection refused")

    def get_online_features(self, **kwargs):
        self._check()
        return self.store.get_online_features(**kwargs)

    def _get_provider(self):
        provider, check = self.store._get_provider(), self._check

        class Flaky:
            def online_read(self, **kwargs):
                check()
                return provider.online_read(**kwargs)

        return Flaky()


def test_store_outage_is_a_503_and_recovers(client, ids) -> None:
    readers = _runtime_readers()
    flaky = [(_FlakyStore(r.store), r) for r in readers]
    for wrapper, reader in flaky:
        reader.store = wrapper
        wrapper.down = True
    try:
        down = client.post("/v1/score/churn", json={"customer_ids": ids["customers"]})
        assert down.status_code == 503
        assert "online feature store unavailable" in down.json()["error"]
        for wrapper, _ in flaky:
            wrapper.down = False
        up = client.post("/v1/score/churn", json={"customer_ids": ids["customers"]})
        assert up.status_code == 200
    finally:
        for wrapper, reader in flaky:
            reader.store = wrapper.store


def _runtime_readers():
    """The online readers of every live runtime (the app holds its service instance)."""
    import gc

    from serving.runtime import Runtime

    runtimes = [o for o in gc.get_objects() if isinstance(o, Runtime)]
    return [reader for runtime in runtimes for reader in runtime.readers.values()]


def test_models_and_reload_keep_serving(client, ids) -> None:
    before = client.get("/v1/models").json()
    names = {m["name"] for m in before["models"]}
    assert names == {"delay_risk", "churn", "next_best_offer", "delivery_estimate"}
    assert all("champion" in m["aliases"] for m in before["models"])
    failures = []

    def hammer() -> None:
        for _ in range(20):
            r = client.post("/v1/score/churn", json={"customer_ids": ids["customers"][:1]})
            if r.status_code != 200:
                failures.append(r.status_code)

    worker = threading.Thread(target=hammer)
    worker.start()
    reloaded = client.post("/v1/admin/reload")
    worker.join()
    assert reloaded.status_code == 200
    assert failures == []
    after = client.get("/v1/models").json()
    assert after["models"][0]["loaded_at"] > before["models"][0]["loaded_at"]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "mlflow" not in p.parts and not p.name.endswith(("-wal", "-shm"))
    }


@pytest.fixture(scope="module")
def server(served_data, tmp_path_factory, serve_service):
    """`bentoml serve` in its own process, on a free loopback port, with a small
    tracking-page limit (`test_the_tracking_page_is_rate_limited_per_client_over_real_http`)."""
    log_path = tmp_path_factory.mktemp("bentoml") / "serve.log"
    env = {**os.environ, "AFTERSALE_TRACKING_RATE_LIMIT": f"{SERVED_RATE_LIMIT}/minute"}
    with serve_service(env, log_path) as url:
        yield url


def test_over_real_http(server, served_data, ids, service_key) -> None:
    folder, _, _ = served_data
    stored = _digest(folder)
    assert httpx.post(f"{server}/v1/outreach/queue", json={"limit": 5}).status_code == 401
    headers = {"Authorization": f"Bearer {service_key}"}
    with httpx.Client(base_url=server, timeout=30, headers=headers) as http:
        delay = http.post("/v1/score/delay", json={"shipment_ids": ids["shipments"]})
        assert delay.status_code == 200, delay.text
        churn = http.post("/v1/score/churn", json={"customer_ids": [*ids["customers"], "nobody"]})
        assert churn.status_code == 200
        assert churn.json()["results"][-1]["status"] == "unknown_id"
        offers = http.post("/v1/recommend", json=page(ids["orders"][0]))
        assert offers.status_code == 200, offers.text
        assert offers.json()["order_id"] == ids["orders"][0]
        explained = http.post("/v1/explain", json={"model": "churn", "ids": ids["customers"]})
        assert explained.status_code == 200, explained.text
        for result in explained.json()["results"]:
            total = result["base_value"] + sum(c["contribution"] for c in result["contributions"])
            assert total == pytest.approx(result["output"])
        churned = {r["customer_id"]: r["probability"] for r in churn.json()["results"]}
        for result in explained.json()["results"]:
            assert result["score"] == pytest.approx(churned[result["id"]], rel=1e-9)
        queue = http.post("/v1/outreach/queue", json={"limit": 5})
        assert queue.status_code == 200
        assert len(queue.json()["actions"]) <= 5
        assert http.get("/v1/models").status_code == 200
        assert http.get("/livez").status_code == 200
        assert http.get("/readyz").status_code == 200
        bad = http.post("/v1/score/delay", json={"shipment_ids": []})
        assert bad.status_code == 400
        assert "shipment_ids" in bad.text
        malformed = http.post(
            "/v1/outreach/queue", content=b"[", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert "request" in metrics.text
    # Nothing a request sends changes stored data.
    assert _digest(folder) == stored


# True answers: what the service and the queue say, held against the raw tables and an
# independent point-in-time retrieval at the same decision instant.


def _raw(served_data, name: str) -> pd.DataFrame:
    return pq.read_table(served_data[0] / "raw" / "current" / f"{name}.parquet").to_pandas()


def _runtime(served_data, **changes):
    from aftersale.settings import get_settings
    from serving.runtime import Runtime

    return Runtime.start(get_settings().model_copy(update=changes))


def test_delivered_parcels_are_answered_as_delivered(client, served_data) -> None:
    as_of = served_data[2]
    ships = _raw(served_data, "shipments")
    delivered = ships[ships["delivered_ts"] <= as_of].tail(40)
    body = client.post(
        "/v1/score/delay", json={"shipment_ids": delivered["shipment_id"].tolist()}
    ).json()
    assert len(body["results"]) == len(delivered)
    for answer, (_, ship) in zip(body["results"], delivered.iterrows(), strict=True):
        assert answer["status"] == "delivered", answer
        assert pd.Timestamp(answer["delivered_at"]) == ship["delivered_ts"]
        assert answer["late"] == bool(ship["delivered_ts"] > ship["promised_ts"])
        assert answer["probability"] is None
        assert answer["delivery_window"] is None
        assert answer["reasons"] == []


def test_a_parcel_is_answered_as_it_was_at_the_decision_instant(served_data) -> None:
    """Decided before its delivery, a delivered parcel is in transit, with the scans made
    by then (its online row, the delivery, is newer than the decision)."""
    ships = _raw(served_data, "shipments").dropna(subset=["delivered_ts"]).tail(20)
    events = _raw(served_data, "tracking_events")
    for _, ship in ships.iterrows():
        decided = ship["shipped_ts"] + (ship["delivered_ts"] - ship["shipped_ts"]) / 2
        runtime = _runtime(served_data, as_of=decided.to_pydatetime())
        (answer,) = runtime.score_delay([ship["shipment_id"]]).results
        assert answer.status in ("ok", "likely_lost")
        assert pd.Timestamp(answer.features_as_of) <= decided
        scans = events[(events["shipment_id"] == ship["shipment_id"])]
        seen = scans[scans["event_ts"] <= decided]
        (record,) = runtime.readers["delay_risk"].read([[ship["shipment_id"]]], decided)
        assert record["scans_so_far"] == len(seen)


def test_lost_parcels_are_answered_without_a_date(served_data) -> None:
    """Past its promise with no scan for the configured time: likely lost, no window;
    every other open parcel in transit. Checked against the raw scans."""
    as_of = served_data[2]
    lost_after_days = 1.0
    runtime = _runtime(served_data, lost_after_days=lost_after_days)
    ships = _raw(served_data, "shipments")
    events = _raw(served_data, "tracking_events")
    open_ = ships[(ships["shipped_ts"] <= as_of) & ~(ships["delivered_ts"] <= as_of)]
    last_scan = (
        events[events["event_ts"] <= as_of].groupby("shipment_id")["event_ts"].max()
    ).reindex(open_["shipment_id"])
    last_heard = last_scan.fillna(open_.set_index("shipment_id")["shipped_ts"])
    silent = as_of - last_heard >= pd.Timedelta(days=lost_after_days)
    expected = (open_.set_index("shipment_id")["promised_ts"] < as_of) & silent
    assert expected.any()
    assert not expected.all()
    answers = []
    for start in range(0, len(open_), 100):
        batch = open_["shipment_id"].iloc[start : start + 100].tolist()
        answers += runtime.score_delay(batch).results
    for answer in answers:
        assert (answer.status == "likely_lost") == bool(expected[answer.shipment_id]), answer
        if answer.status == "likely_lost":
            assert answer.delivery_window is None
            assert answer.probability is None
            assert answer.status_reason.startswith("Likely lost")
        else:
            assert answer.status == "ok"
            window = answer.delivery_window
            # The coverage holds for local dates: the instants span those whole days.
            assert window.earliest < window.latest
            last = pd.Timestamp(window.latest).tz_convert(window.timezone)
            assert last.date() == window.latest_date
            assert (last + pd.Timedelta(microseconds=1)).date() > window.latest_date


def _point_in_time(served_data, service: str, key: str, ids: list[str], at: pd.Timestamp):
    """Feast's own point-in-time retrieval of a feature service, as training reads it."""
    from aftersale.settings import get_settings
    from features.store.config import feature_store
    from features.store.retrieval import historical_features

    store = feature_store(get_settings())
    entity_df = pd.DataFrame({key: ids, "event_timestamp": at})
    features = store.get_feature_service(service) if isinstance(service, str) else service
    got = historical_features(store, entity_df, features)
    return got.set_index(key)


def _same(online, offline) -> bool:
    missing = online is None or (isinstance(online, float) and online != online)
    if pd.isna(offline) if not isinstance(offline, str | bool) else False:
        return missing
    if isinstance(offline, str):
        return online == offline
    return not missing and abs(float(online) - float(offline)) <= 1e-9 * max(1, abs(offline))


@pytest.mark.parametrize("days_before", [0, 3.6, 40])
def test_online_reads_equal_a_point_in_time_retrieval(served_data, days_before) -> None:
    """Every served feature of customers and shipments is the value as of the decision
    instant: Feast's historical retrieval at that instant, not the latest online row."""
    at = served_data[2] - pd.Timedelta(days=days_before)
    runtime = _runtime(served_data, as_of=at.to_pydatetime())
    customers = _raw(served_data, "customers")["customer_id"].tolist()[:150]
    ships = _raw(served_data, "shipments")
    shipments = ships.loc[ships["shipped_ts"] <= at, "shipment_id"].tolist()[-150:]
    for model, service, key, ids in (
        ("churn", "churn_v1", "customer_id", customers),
        ("delay_risk", "delay_risk_v1", "shipment_id", shipments),
    ):
        reader = runtime.readers[model]
        online = reader.read([[i] for i in ids], at)
        offline = _point_in_time(served_data, service, key, ids, at)
        compared = 0
        for entity, record in zip(ids, online, strict=True):
            row = offline.loc[entity]
            if record is None:
                assert all(pd.isna(row[n]) for n in reader.names), entity
                continue
            assert pd.Timestamp(record["feature_ts"]) <= at
            if all(pd.isna(row[n]) for n in reader.names):
                # Feast's retrieval honours the view's TTL; the service answers older
                # parcels too (as likely lost): their row is older than the TTL.
                assert at - pd.Timestamp(record["feature_ts"]) > reader.view.ttl, entity
                continue
            for name in reader.names:
                assert _same(record[name], row[name]), (
                    model,
                    entity,
                    name,
                    record[name],
                    row[name],
                )
                compared += 1
        assert compared > 0


@pytest.mark.parametrize("days_before", [0, 40])
def test_direct_sqlite_reads_equal_reads_through_feasts_provider(served_data, days_before) -> None:
    """The readers' own SQLite path gives the records Feast's provider gives, point-in-time
    fallback included, one key or many (the provider path serves other online stores)."""
    at = served_data[2] - pd.Timedelta(days=days_before)
    runtime = _runtime(served_data, as_of=at.to_pydatetime())
    customers = [*_raw(served_data, "customers")["customer_id"].tolist()[:60], "unknown"]
    shipments = [*_raw(served_data, "shipments")["shipment_id"].tolist()[-60:], "unknown"]
    categories = [[c, "books"] for c in customers[:20]]
    readers = [
        (runtime.readers["churn"], [[i] for i in customers]),
        (runtime.readers["delay_risk"], [[i] for i in shipments]),
        (runtime.recommender.categories, categories),
    ]
    for reader, keys in readers:
        direct = [reader.read([key], at)[0] for key in keys[:5]] + reader.read(keys, at)
        assert reader._direct is not None
        wrapper, reader.store = _FlakyStore(reader.store), _FlakyStore(reader.store)
        try:
            through = [reader.read([key], at)[0] for key in keys[:5]] + reader.read(keys, at)
            assert reader._direct is None
        finally:
            reader.store = wrapper.store
        assert direct == through
        assert any(record is None for record in direct)
        assert any(record is not None for record in direct)


def test_order_reads_equal_a_point_in_time_retrieval(served_data) -> None:
    """The tracking page's order row is the order's state as of the decision instant."""
    at = served_data[2] - pd.Timedelta(days=2, hours=7)
    runtime = _runtime(served_data, as_of=at.to_pydatetime())
    reader = runtime.recommender.orders
    orders = _raw(served_data, "orders")
    ids = orders.loc[orders["order_ts"] <= at, "order_id"].tolist()[-150:]
    refs = [f"{reader.view.name}:{name}" for name in reader.names]
    offline = _point_in_time(served_data, refs, "order_id", ids, at)
    compared = 0
    for entity, record in zip(ids, reader.read([[i] for i in ids], at), strict=True):
        assert record is not None, entity
        assert pd.Timestamp(record["feature_ts"]) <= at
        for name in reader.names:
            assert _same(record[name], offline.loc[entity, name]), (entity, name)
            compared += 1
    assert compared > 0


def test_churn_names_only_a_contact_reason_the_customer_had(client, served_data) -> None:
    as_of = served_data[2]
    contacts = _raw(served_data, "contacts")
    contacts = contacts[contacts["ts"] < as_of]
    had = contacts.groupby("customer_id")["reason"].agg(set)
    customers = _raw(served_data, "customers")["customer_id"].tolist()
    named = []
    for start in range(0, len(customers), 100):
        body = client.post(
            "/v1/score/churn", json={"customer_ids": customers[start : start + 100]}
        ).json()
        named += [r for r in body["results"] if r["status"] == "ok"]
    assert named
    for answer in named:
        reasons = had.get(answer["customer_id"], set())
        if reasons:
            assert answer["contact_reason"] in reasons, answer
        else:
            assert answer["contact_reason"] == "no_contact", answer
    assert {"no_contact"} < {a["contact_reason"] for a in named}


def test_queue_and_service_agree_and_name_only_own_contact_reasons(client, served_data) -> None:
    """The batch and the service decide on the same state: the same churn risk for the
    same customer at the same instant, and a queue reason names only the customer's own
    contact reasons."""
    _, queue_path, as_of = served_data
    queue = pq.read_table(queue_path).to_pandas()
    churn = queue[queue["action"] == "winback_offer"].head(100)
    assert len(churn)
    body = client.post("/v1/score/churn", json={"customer_ids": churn["customer_id"].tolist()})
    online = {r["customer_id"]: r for r in body.json()["results"]}
    contacts = _raw(served_data, "contacts")
    had = contacts[contacts["ts"] < as_of].groupby("customer_id")["reason"].agg(set)
    for _, action in churn.iterrows():
        answer = online[action["customer_id"]]
        assert answer["probability"] == pytest.approx(action["risk"], abs=1e-9)
        reasons = had.get(action["customer_id"], set())
        if reasons:
            driver = answer["contact_reason"].replace("_", " ")
            assert f"driven by {driver} contacts" in action["reason"]
        else:
            assert "no contact with service" in action["reason"]


def _next_midnight(instants: pd.Series) -> pd.Series:
    return instants.dt.floor("D") + pd.Timedelta(days=1)


def _raw_counts(served_data, at: pd.Timestamp) -> pd.DataFrame:
    """Counts of each customer's history as of `at`, straight from the raw tables. A
    trailing W-day count holds an event from its instant until the midnight after it plus
    W days, the snapshot tables' documented window rule."""
    customers = _raw(served_data, "customers")[["customer_id"]].set_index("customer_id")
    orders = _raw(served_data, "orders")
    contacts = _raw(served_data, "contacts")
    ships = _raw(served_data, "shipments").merge(orders[["order_id", "customer_id"]])
    orders, contacts = orders[orders["order_ts"] < at], contacts[contacts["ts"] < at]
    in_window = at < _next_midnight(contacts["ts"]) + pd.Timedelta(days=90)
    late = ships["delivered_ts"].isna() | (ships["delivered_ts"] > ships["promised_ts"])
    known = ships["delivered_ts"].where(~late, ships["promised_ts"])
    outcome = ships[known < at].assign(late=late[known < at])
    recent = at < _next_midnight(known[known < at]) + pd.Timedelta(days=90)
    counts = {
        "orders_total": orders.groupby("customer_id").size(),
        "contacts_total": contacts.groupby("customer_id").size(),
        "unresolved_contacts_90d": contacts[~contacts["resolved_first_contact"] & in_window]
        .groupby("customer_id")
        .size(),
        "deliveries_total": outcome.groupby("customer_id").size(),
        "late_deliveries_total": outcome[outcome["late"]].groupby("customer_id").size(),
        "late_deliveries_90d": outcome[outcome["late"] & recent].groupby("customer_id").size(),
    }
    for name, series in counts.items():
        customers[name] = series.reindex(customers.index).fillna(0).astype(int)
    return customers


@pytest.mark.parametrize("hours_before", [0, 13.5, 24 * 45 + 7])
def test_served_counts_and_reasons_match_the_raw_tables(served_data, hours_before) -> None:
    """Every count the churn answer is built on, and every count a reason states, equals
    the count computed from the raw tables at the decision instant (same-day orders and
    contacts included)."""
    at = served_data[2] - pd.Timedelta(hours=hours_before)
    runtime = _runtime(served_data, as_of=at.to_pydatetime())
    expected = _raw_counts(served_data, at)
    ids = expected.index.tolist()
    records = runtime.readers["churn"].read([[i] for i in ids], at)
    checked = 0
    for customer, record in zip(ids, records, strict=True):
        if record is None:
            assert expected.loc[customer, "orders_total"] == 0, customer
            continue
        for name in expected.columns:
            assert int(record[name] or 0) == expected.loc[customer, name], (customer, name)
            checked += 1
    assert checked > 0
    stated = 0
    for start in range(0, len(ids), 100):
        for answer in runtime.score_churn(ids[start : start + 100]).results:
            for reason in answer.reasons:
                if reason.feature in expected.columns:
                    count = expected.loc[answer.customer_id, reason.feature]
                    assert f": {count:,}" in reason.text, (answer.customer_id, reason.text)
                    stated += 1
    assert stated > 0


@pytest.mark.parametrize("unknown", [["nope"], [""], ["nope", "also-not"]])
def test_only_unknown_ids_are_answered_as_unknown(client, unknown) -> None:
    for path, field in (("/v1/score/churn", "customer_ids"), ("/v1/score/delay", "shipment_ids")):
        response = client.post(path, json={field: unknown})
        assert response.status_code == 200, response.text
        assert [r["status"] for r in response.json()["results"]] == ["unknown_id"] * len(unknown)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text → (sample name, sorted labels) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _delta(before: dict, after: dict, name: str, **labels) -> float:
    """How much the samples named `name` whose labels include `labels` grew, summed."""

    def total(samples: dict) -> float:
        return sum(
            v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()
        )

    return total(after) - total(before)


def test_metrics_count_what_was_answered(server, ids, service_key) -> None:
    headers = {"Authorization": f"Bearer {service_key}"}
    with httpx.Client(base_url=server, timeout=30, headers=headers) as http:
        before = _samples(http.get("/metrics").text)
        churn = http.post("/v1/score/churn", json={"customer_ids": [*ids["customers"], "nobody"]})
        delay = http.post("/v1/score/delay", json={"shipment_ids": [*ids["shipments"], "none"]})
        offers = http.post("/v1/recommend", json=page(ids["orders"][0]))
        assert churn.status_code == delay.status_code == offers.status_code == 200
        models = http.get("/v1/models").json()["models"]
        after = _samples(http.get("/metrics").text)
    for model, response in (("churn", churn), ("delay_risk", delay)):
        results = response.json()["results"]
        for status in {r["status"] for r in results}:
            sent = sum(r["status"] == status for r in results)
            assert _delta(before, after, "aftersale_ids_total", model=model, status=status) == sent
        scored = [r for r in results if r["probability"] is not None]
        for band in {r["band"] for r in scored}:
            sent = sum(r["band"] == band for r in scored)
            assert _delta(before, after, "aftersale_band_total", model=model, band=band) == sent
        assert _delta(before, after, "aftersale_score_count", model=model) == len(scored)
        total = sum(r["probability"] for r in scored)
        assert _delta(before, after, "aftersale_score_sum", model=model) == pytest.approx(total)
    status = "cold_start" if offers.json()["cold_start"] else "ok"
    assert _delta(before, after, "aftersale_ids_total", model="next_best_offer", status=status) == 1
    # Online reads were timed; every loaded champion version is marked.
    assert _delta(before, after, "aftersale_online_read_seconds_count") >= 3
    for m in models:
        key = ("aftersale_model_loaded", (("model", m["name"]), ("version", m["version"])))
        assert after[key] == 1


def test_an_unloadable_optional_champion_leaves_the_service_serving(served_data, ids) -> None:
    """A corrupted artefact of an optional champion (here the offer model's files gone
    from the artifact store) neither stops the service from starting nor hides why; its
    local copy serves it while there is one."""
    import shutil
    from urllib.parse import urlparse

    import mlflow

    from aftersale.settings import get_settings
    from models.served.registry import CHAMPION, ModelUnavailableError, tracking
    from serving.runtime import CHAMPION_COPIES

    settings = get_settings()
    with tracking(settings.tracking_uri):
        client = mlflow.MlflowClient()
        version = client.get_model_version_by_alias("next_best_offer", CHAMPION)
        location = client.get_model_version_download_uri("next_best_offer", version.version)
    files = Path(urlparse(location).path)
    assert files.is_dir(), location
    aside = files.with_name(files.name + ".aside")
    copies = settings.serving_dir / CHAMPION_COPIES / "next_best_offer"
    _runtime(served_data)  # a start with the artefact in place keeps a local copy
    assert (copies / str(version.version)).is_dir()
    shutil.move(files, aside)
    try:
        # The registry's files are gone; the copy of the same version serves.
        kept = _runtime(served_data)
        assert "next_best_offer" not in kept.models_info().unavailable
        assert kept.recommend(ids["orders"][0], 3).offers
        # Without the copy there is nothing left to load it from.
        shutil.rmtree(copies)
        runtime = _runtime(served_data)
        info = runtime.models_info()
        assert "next_best_offer" in info.unavailable
        assert "cannot be loaded" in info.unavailable["next_best_offer"]
        assert "no local copy" in info.unavailable["next_best_offer"]
        assert {m.name for m in info.models} >= {"delay_risk", "churn"}
        # Scores still answer; the tracking page says why it cannot.
        assert runtime.score_churn(ids["customers"]).results[0].status == "ok"
        with pytest.raises(ModelUnavailableError, match="cannot be loaded"):
            runtime.recommend(ids["orders"][0], 3)
    finally:
        shutil.move(aside, files)
    assert "next_best_offer" not in _runtime(served_data).models_info().unavailable


# The tracking page: its parcels behind the order's token, the widget and the demo page.
# The delay-risk bands as the page words them.
RISK_IN_WORDS = {
    "low": "likely on time",
    "medium": "some risk of delay",
    "high": "high risk of delay",
}


def _open_order(served_data, ids) -> tuple[str, str]:
    """An order whose parcel is in transit at the decision instant, and that parcel."""
    ships = _raw(served_data, "shipments").set_index("shipment_id")
    shipment = ids["shipments"][0]
    return str(ships.loc[shipment, "order_id"]), shipment


def test_the_tracking_route_answers_the_orders_parcels_as_score_delay_does(
    client, served_data, ids
) -> None:
    """Each parcel of the order is answered as `/v1/score/delay` answers it at the same
    instant (status, window, band and the band in words), only with the order's token."""
    from serving.tokens import mint

    order, shipment = _open_order(served_data, ids)
    secret = TOKEN_SECRET.encode()
    for body in ({"order_id": order}, {"order_id": order, "token": mint("other", secret)}):
        denied = client.post("/v1/tracking", json=body)
        assert denied.status_code == 401, denied.text
        assert shipment not in denied.text
    tracked = client.post("/v1/tracking", json=page(order))
    assert tracked.status_code == 200, tracked.text
    answer = tracked.json()
    ships = _raw(served_data, "shipments")
    as_of = served_data[2]
    own = ships[(ships["order_id"] == order) & (ships["shipped_ts"] <= as_of)]
    assert answer["status"] == "ok"
    assert [p["shipment_id"] for p in answer["parcels"]] == own.sort_values("shipped_ts")[
        "shipment_id"
    ].tolist()
    scored = client.post("/v1/score/delay", json={"shipment_ids": [shipment]}).json()
    assert answer["as_of"] == scored["as_of"]
    (score,) = scored["results"]
    (parcel,) = [p for p in answer["parcels"] if p["shipment_id"] == shipment]
    assert score["status"] == parcel["status"] == "ok"
    assert parcel["band"] == score["band"]
    assert parcel["risk_text"] == RISK_IN_WORDS[score["band"]]
    window = score["delivery_window"]
    assert window is not None
    assert parcel["delivery_window"] == {
        key: window[key]
        for key in ("most_likely_date", "earliest_date", "latest_date", "coverage", "text")
    }
    # No probability, reasons or time zone on the public page.
    assert "probability" not in parcel
    assert "reasons" not in parcel
    assert window["timezone"] not in tracked.text
    unknown = client.post("/v1/tracking", json=page("no-such-order"))
    assert unknown.status_code == 200
    assert unknown.json()["status"] == "unknown_id"
    assert unknown.json()["parcels"] == []
    assert client.post("/v1/tracking", json={"token": "x"}).status_code == 400


@pytest.mark.parametrize(
    ("order_id", "status"),
    [("no-such-order", 404), ("bad%20id", 400), ("%3Cscript%3E", 400), ("a" * 200, 400)],
)
def test_the_demo_page_of_a_bad_order_id_is_a_4xx_page(client, order_id, status) -> None:
    answer = client.get(f"/demo/tracking/{order_id}", headers={"Authorization": ""})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert "<script" not in answer.text


def test_the_demo_page_holds_the_orders_own_token_and_no_key(
    client, served_data, ids, service_key
) -> None:
    """The page needs no key, shows none, and carries a token that opens its order alone."""
    import re

    from serving.tokens import verify

    order, _ = _open_order(served_data, ids)
    shown = client.get(f"/demo/tracking/{order}", headers={"Authorization": ""})
    assert shown.status_code == 200, shown.text
    assert service_key not in shown.text
    (token,) = re.findall(r'data-aftersale-token="([^"]+)"', shown.text)
    keys = [TOKEN_SECRET.encode()]
    assert verify(token, order, keys).ok
    assert not verify(token, ids["orders"][1], keys).ok
    script = client.get("/widget/tracking.js", headers={"Authorization": ""})
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "/v1/tracking" in script.text
    assert "/v1/recommend" in script.text


def test_the_demo_page_is_off_unless_configured(monkeypatch) -> None:
    """It shows any order to whoever names it: only a demo turns it on."""
    from aftersale.settings import Settings

    monkeypatch.delenv("AFTERSALE_DEMO_PAGES")
    assert Settings().demo_pages is False
    monkeypatch.setenv("AFTERSALE_DEMO_PAGES", "true")
    assert Settings().demo_pages is True


# A shop's page on an origin of its own, and a page on any other.
SHOP_ORIGIN = "https://shop.example"
OTHER_ORIGIN = "https://elsewhere.example"


def _preflight(origin: str) -> dict[str, str]:
    """A browser's preflight of the widget's JSON POST from a page on `origin`."""
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }


def _cors_headers(answer: httpx.Response) -> set[str]:
    return {name for name in answer.headers if name.lower().startswith("access-control-")}


@pytest.fixture(scope="module")
def cors_server(served_data, tmp_path_factory, serve_service):
    """`bentoml serve` in its own process, allowing the shop's origin alone (the origins are
    read when the service starts)."""
    log_path = tmp_path_factory.mktemp("bentoml-cors") / "serve.log"
    env = {**os.environ, "AFTERSALE_CORS_ORIGINS": SHOP_ORIGIN}
    with serve_service(env, log_path) as url:
        yield url


def test_a_shops_page_may_call_the_widgets_routes_over_real_http(cors_server, ids) -> None:
    """A preflight from the allowed origin is answered; the widget's calls, refusals included
    (the widget shows their message), name the origin."""
    order = ids["orders"][0]
    with httpx.Client(base_url=cors_server, timeout=30) as http:
        for route in ("/v1/tracking", "/v1/recommend"):
            preflight = http.options(route, headers=_preflight(SHOP_ORIGIN))
            assert preflight.status_code == 200, preflight.text
            assert preflight.headers["access-control-allow-origin"] == SHOP_ORIGIN
            assert "POST" in preflight.headers["access-control-allow-methods"]
            allowed = preflight.headers["access-control-allow-headers"].lower()
            assert "content-type" in allowed
            assert int(preflight.headers["access-control-max-age"]) > 0
            assert "access-control-allow-credentials" not in preflight.headers
        origin = {"Origin": SHOP_ORIGIN}
        tracked = http.post("/v1/tracking", json=page(order), headers=origin)
        assert tracked.status_code == 200, tracked.text
        assert tracked.headers["access-control-allow-origin"] == SHOP_ORIGIN
        assert "origin" in tracked.headers["vary"].lower()
        offers = http.post("/v1/recommend", json=page(order), headers=origin)
        assert offers.status_code == 200, offers.text
        assert offers.headers["access-control-allow-origin"] == SHOP_ORIGIN
        denied = http.post("/v1/tracking", json={"order_id": order, "token": "x"}, headers=origin)
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == SHOP_ORIGIN
        script = http.get("/widget/tracking.js", headers=origin)
        assert script.headers["access-control-allow-origin"] == SHOP_ORIGIN


def test_another_origin_or_route_gets_no_allow_header_over_real_http(cors_server, ids) -> None:
    """Another origin's page is told nothing; a route that needs a key answers no page."""
    with httpx.Client(base_url=cors_server, timeout=30) as http:
        preflight = http.options("/v1/tracking", headers=_preflight(OTHER_ORIGIN))
        assert preflight.status_code >= 400
        assert "access-control-allow-origin" not in preflight.headers
        tracked = http.post(
            "/v1/tracking", json=page(ids["orders"][0]), headers={"Origin": OTHER_ORIGIN}
        )
        assert tracked.status_code == 200, tracked.text
        assert "access-control-allow-origin" not in tracked.headers
        keyed = http.options("/v1/score/delay", headers=_preflight(SHOP_ORIGIN))
        assert "access-control-allow-origin" not in keyed.headers


def test_without_allowed_origins_the_service_sends_no_cors_headers(server, ids) -> None:
    """The default: the page and the service share one origin, and no origin is allowed."""
    with httpx.Client(base_url=server, timeout=30) as http:
        preflight = http.options("/v1/tracking", headers=_preflight(SHOP_ORIGIN))
        assert not _cors_headers(preflight), preflight.headers
        tracked = http.post(
            "/v1/tracking", json=page(ids["orders"][0]), headers={"Origin": SHOP_ORIGIN}
        )
        assert tracked.status_code == 200, tracked.text
        assert not _cors_headers(tracked), tracked.headers


def _browser():
    """Playwright's Chromium driver on the system's Chromium; skips naming what is missing."""
    from features.report.picture import find_chromium

    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the Python package playwright is not installed"
    )
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian's `chromium` package)")
    return sync_api, chromium


def test_the_tracking_page_in_a_browser_shows_what_the_api_answers(
    server, served_data, ids, service_key, tmp_path
) -> None:
    """Headless Chromium opens the demo page of an order in transit: the parcel's status,
    window and risk words are what `/v1/tracking` and `/v1/score/delay` answer, and the
    offers are `/v1/recommend`'s, in its order. The picture goes to
    `AFTERSALE_TRACKING_PICTURE` when set (`make tracking-picture`)."""
    sync_api, chromium = _browser()
    order, shipment = _open_order(served_data, ids)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            view = browser.new_page(viewport={"width": 800, "height": 600})
            opened = view.goto(f"{server}/demo/tracking/{order}")
            assert opened is not None
            assert opened.status == 200
            widget = view.locator(".aftersale-tracking")
            sync_api.expect(widget).to_have_attribute("data-state", "ready", timeout=30_000)
            parcel = view.locator(f'section[data-shipment="{shipment}"]')
            shown = {
                field: parcel.locator(f'[data-field="{field}"]').inner_text()
                for field in ("status", "window", "risk")
            }
            offers = [
                (
                    item.get_attribute("data-category"),
                    item.get_attribute("data-offer-type"),
                    float(item.get_attribute("data-discount")),
                )
                for item in view.locator("li.offer").all()
            ]
            picture = tmp_path / "tracking_page.png"
            view.screenshot(path=str(picture))
        finally:
            browser.close()
    headers = {"Authorization": f"Bearer {service_key}"}
    with httpx.Client(base_url=server, timeout=30) as http:
        tracked = http.post("/v1/tracking", json=page(order)).json()
        recommended = http.post("/v1/recommend", json=page(order)).json()
        scored = http.post(
            "/v1/score/delay", json={"shipment_ids": [shipment]}, headers=headers
        ).json()
    (score,) = scored["results"]
    assert shown["status"] == "In transit"
    window_text = score["delivery_window"]["text"]
    assert shown["window"] == window_text[0].upper() + window_text[1:]
    assert shown["risk"].lower() == RISK_IN_WORDS[score["band"]]
    (answered,) = [p for p in tracked["parcels"] if p["shipment_id"] == shipment]
    assert answered["delivery_window"]["text"] == window_text
    assert offers == [
        (o["category"], o["offer_type"], o["discount"]) for o in recommended["offers"]
    ]
    assert picture.stat().st_size > 10_000
    target = os.environ.get("AFTERSALE_TRACKING_PICTURE")
    if target:
        Path(target).write_bytes(picture.read_bytes())


def test_the_tracking_page_is_rate_limited_per_client_over_real_http(server, ids) -> None:
    """Past the served limit a client gets 429 with Retry-After, and the service still answers
    the other routes. (Last in the module: the limit holds for a minute.)"""
    answers = [
        httpx.post(f"{server}/v1/recommend", json=page(ids["orders"][0]), timeout=30)
        for _ in range(SERVED_RATE_LIMIT + 1)
    ]
    statuses = [a.status_code for a in answers]
    assert 429 in statuses, statuses
    limited = answers[statuses.index(429)]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert set(statuses[: statuses.index(429)]) == {200}
    assert httpx.get(f"{server}/livez", timeout=30).status_code == 200
