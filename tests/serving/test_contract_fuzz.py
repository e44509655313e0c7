"""The service's contract under generated requests: schemathesis reads the served OpenAPI
document and sends requests to every route of a real `bentoml serve` over loopback HTTP.

A second in-process app cannot be built beside `test_service`'s (BentoML registers its
Prometheus metrics once per process), hence the subprocess. Each answer must be no 5xx and
match its documented status and body; without a key, a protected route answers 401 alone;
oversized and deeply nested bodies are refused quickly and the service keeps answering.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

TOKEN_SECRET = "tracking-token-secret-for-tests-0123456789"
EXAMPLES_PER_ROUTE = 25
# As `test_uplift_service`: enough customers for the uplift model's learners.
CUSTOMERS = 2_500


@pytest.fixture(scope="module")
def served_env(tmp_path_factory, prefect_harness, service_key) -> dict[str, str]:
    """The environment of a service over a data folder with every champion, a materialised
    online store and an outreach queue; `service_key` holds every scope. The business is
    large enough for the uplift model to train, so that every model answers `/v1/explain`
    (without its champion the uplift's explanation is a 503, which no generated request may
    get)."""
    from features.sources.simulator import simulate
    from flows.build_features import build_features
    from flows.ingest import ingest
    from flows.score_batch import score_batch
    from flows.train import train

    sim_dir = tmp_path_factory.mktemp("contract-sim") / "raw"
    simulate(sim_dir, customers=CUSTOMERS, seed=11)
    folder = tmp_path_factory.mktemp("contract")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        ingest(source="folder", path=sim_dir)
        build_features(materialize_to_online=True)
        train(
            models=[
                "delay_risk",
                "churn",
                "next_best_offer",
                "delivery_estimate",
                "outreach_uplift",
            ]
        )
        queue_path = score_batch()
    meta = json.loads(pq.read_schema(queue_path).metadata[b"aftersale"])
    return {
        **os.environ,
        "AFTERSALE_DATA_DIR": str(folder),
        "AFTERSALE_AS_OF": pd.Timestamp(meta["as_of"]).isoformat(),
        "AFTERSALE_API_KEYS": f"tests:score:read+outreach:read+admin:{service_key}",
        "AFTERSALE_TOKEN_SECRET": TOKEN_SECRET,
        # Generated requests come far faster than a tracking page's visitors.
        "AFTERSALE_TRACKING_RATE_LIMIT": "1000000/minute",
    }


@pytest.fixture(scope="module")
def server(served_env, tmp_path_factory, serve_service):
    """`bentoml serve` in its own process, on a free loopback port."""
    log_path = tmp_path_factory.mktemp("bentoml") / "serve.log"
    with serve_service(served_env, log_path) as url:
        yield url


def test_every_route_keeps_its_documented_contract(server, service_key) -> None:
    """No 5xx, and each answer's status and body as documented, for valid and invalid
    requests to every route, with a key of every scope."""
    from benchmarks.contract import fuzz

    run = fuzz(server, service_key, EXAMPLES_PER_ROUTE)
    assert run.operations >= 10
    assert not run.failures, "\n\n".join(run.failures)


def test_without_a_key_a_protected_route_answers_401_alone(server) -> None:
    """Every route the document marks as needing a key, called without one: 401, whatever
    the body; the tracking page without its token: 401, or 400 for a body it cannot read."""
    document = httpx.get(f"{server}/docs.json", timeout=10).json()
    protected = [
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security")
    ]
    assert len(protected) >= 6
    bodies = [None, {}, {"customer_ids": ["c1"]}, b"[", b"x" * 200_000]
    with httpx.Client(base_url=server, timeout=10) as http:
        for path, method in protected:
            for body in bodies:
                content = body if isinstance(body, bytes) else None
                answer = http.request(
                    method, path, json=body if content is None else None, content=content
                )
                assert answer.status_code == 401, (path, body, answer.text)
                assert answer.json()["error"]
        for body in bodies[:3]:
            assert http.post("/v1/recommend", json=body).status_code in (400, 401)


def _streamed(size: int):
    yield b'{"shipment_ids": ["'
    for _ in range(size // 100_000):
        yield b"s" * 100_000
    yield b'"]}'


@pytest.mark.parametrize(
    ("label", "body"),
    [
        ("10 MB declared", b'{"shipment_ids": ["' + b"s" * 10_000_000 + b'"]}'),
        ("10 MB streamed without a length", None),
        ("10,000 levels of nesting", b'{"shipment_ids": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
        ("10,000 ids", json.dumps({"shipment_ids": [f"s{i}" for i in range(10_000)]}).encode()),
    ],
)
def test_oversized_and_deep_bodies_are_refused_quickly(server, service_key, label, body) -> None:
    headers = {"Authorization": f"Bearer {service_key}", "Content-Type": "application/json"}
    content = _streamed(10_000_000) if body is None else body
    started = time.perf_counter()
    answer = httpx.post(f"{server}/v1/score/delay", content=content, headers=headers, timeout=30)
    seconds = time.perf_counter() - started
    assert answer.status_code in (400, 413), (label, answer.text[:200])
    assert answer.json()["error"]
    assert seconds < 2, (label, seconds)
    assert httpx.get(f"{server}/livez", timeout=5).status_code == 200


def test_a_body_that_is_not_json_is_a_415(server, service_key) -> None:
    headers = {"Authorization": f"Bearer {service_key}", "Content-Type": "multipart/form-data"}
    answer = httpx.post(f"{server}/v1/score/churn", content=b"--x--", headers=headers)
    assert answer.status_code == 415
    assert "JSON" in answer.json()["error"]


def test_every_model_explains_its_served_score_over_http(server, served_env, service_key) -> None:
    """`/v1/explain` for each of the four models, over real HTTP: the base value and the
    contributions add up to the output, and the score is what the scoring route (or the
    tracking page) answers for the same id at the same instant."""
    import math

    from serving.tokens import mint

    folder = Path(served_env["AFTERSALE_DATA_DIR"])
    effects = pq.read_table(folder / "serving" / "outreach_effects.parquet").to_pandas()
    customers = effects["customer_id"].head(5).tolist()
    raw = next(p for p in sorted((folder / "raw").iterdir()) if p.is_dir())
    shipments = pq.read_table(raw / "shipments.parquet").to_pandas()
    as_of = pd.Timestamp(served_env["AFTERSALE_AS_OF"])
    moving = shipments[
        (shipments["shipped_ts"] <= as_of)
        & (shipments["delivered_ts"].isna() | (shipments["delivered_ts"] > as_of))
    ]
    parcels = moving["shipment_id"].head(5).tolist()
    orders = moving["order_id"].head(5).tolist()
    headers = {"Authorization": f"Bearer {service_key}"}
    with httpx.Client(base_url=server, timeout=30, headers=headers) as http:

        def explained(model: str, ids: list[str]) -> dict[str, dict]:
            answer = http.post("/v1/explain", json={"model": model, "ids": ids})
            assert answer.status_code == 200, answer.text
            results = {r["id"]: r for r in answer.json()["results"] if r["status"] == "ok"}
            assert results, answer.text
            for r in results.values():
                total = r["base_value"] + sum(c["contribution"] for c in r["contributions"])
                assert total == pytest.approx(r["output"], abs=1e-6)
            return results

        churn = http.post("/v1/score/churn", json={"customer_ids": customers}).json()["results"]
        by_customer = {r["customer_id"]: r for r in churn}
        for i, r in explained("churn", customers).items():
            assert r["score"] == pytest.approx(by_customer[i]["probability"], rel=1e-9)
        for i, r in explained("outreach_uplift", customers).items():
            assert r["score"] == pytest.approx(by_customer[i]["best_action_uplift"], rel=1e-9)
            assert r["output"] == pytest.approx(r["score"], rel=1e-9)
        delay = http.post("/v1/score/delay", json={"shipment_ids": parcels}).json()["results"]
        by_parcel = {r["shipment_id"]: r for r in delay}
        for i, r in explained("delay_risk", parcels).items():
            assert r["score"] == pytest.approx(by_parcel[i]["probability"], rel=1e-9)
        secret = TOKEN_SECRET.encode()
        for i, r in explained("next_best_offer", orders).items():
            page = {"order_id": i, "k": 1, "token": mint(i, secret)}
            offers = http.post("/v1/recommend", json=page).json()["offers"]
            assert r["score"] == pytest.approx(offers[0]["acceptance_probability"], rel=1e-9)
            assert 0 < r["score"] < 1
            assert not math.isnan(r["output"])
