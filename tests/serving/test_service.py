"""The service end to end: a small business ingested, featurised, trained and batch-scored
through the flows, then served through the ASGI app and through a real `bentoml serve`."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served_data(tmp_path_factory, prefect_harness, sim_dir):
    """A data folder with champions, a materialised online store and an outreach queue."""
    from flows.build_features import build_features
    from flows.ingest import ingest
    from flows.score_batch import score_batch
    from flows.train import train

    folder = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
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
    folder, queue_path, _ = served_data
    raw = folder / "raw" / "current"
    queue = pq.read_table(queue_path).to_pandas()
    shipments = queue.loc[queue["action"] == "delay_notice", "subject_id"].tolist()
    if not shipments:
        shipments = pq.read_table(raw / "shipments.parquet").column("shipment_id").to_pylist()
    customers = pq.read_table(raw / "customers.parquet").column("customer_id").to_pylist()
    orders = pq.read_table(raw / "orders.parquet").sort_by([("order_ts", "descending")])
    return {
        "shipments": shipments[:3],
        "customers": customers[:3],
        "orders": orders.column("order_id").to_pylist()[:3],
        "order_customers": orders.column("customer_id").to_pylist()[:3],
    }


@pytest.fixture(scope="module")
def client(served_data):
    from starlette.testclient import TestClient

    from serving.service import Aftersale

    with TestClient(Aftersale.to_asgi()) as test_client:
        yield test_client


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


def test_recommend_answers_offers_without_personal_data(client, ids) -> None:
    for order_id, customer_id in zip(ids["orders"], ids["order_customers"], strict=True):
        response = client.post("/v1/recommend", json={"order_id": order_id, "k": 2})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["order_id"] == order_id
        assert customer_id not in response.text
        if body["cold_start"]:
            continue
        offers = body["offers"]
        assert 1 <= len(offers) <= 2
        assert [o["rank"] for o in offers] == list(range(1, len(offers) + 1))
        values = [o["expected_value"] for o in offers]
        assert values == sorted(values, reverse=True)


def test_recommend_flags_a_cold_start_for_an_unknown_order(client) -> None:
    response = client.post("/v1/recommend", json={"order_id": "no-such-order"})
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(served_data, tmp_path_factory):
    """`bentoml serve` in its own process, on a free loopback port."""
    log_path = tmp_path_factory.mktemp("bentoml") / "serve.log"
    port = _free_port()
    log = open(log_path, "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            *[sys.executable, "-m", "bentoml", "serve", "serving.service:Aftersale"],
            *["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(ROOT)],
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"bentoml serve exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("bentoml serve was not ready in time")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_over_real_http(server, served_data, ids) -> None:
    folder, _, _ = served_data
    stored = _digest(folder)
    with httpx.Client(base_url=server, timeout=30) as http:
        delay = http.post("/v1/score/delay", json={"shipment_ids": ids["shipments"]})
        assert delay.status_code == 200, delay.text
        churn = http.post("/v1/score/churn", json={"customer_ids": [*ids["customers"], "nobody"]})
        assert churn.status_code == 200
        assert churn.json()["results"][-1]["status"] == "unknown_id"
        offers = http.post("/v1/recommend", json={"order_id": ids["orders"][0]})
        assert offers.status_code == 200, offers.text
        assert offers.json()["order_id"] == ids["orders"][0]
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
