"""Serving benchmarks: request latency and throughput over HTTP, and batch scoring.

Targets (issue: serving), each measured in the same run beside its yardstick:
- `/v1/recommend` and `/v1/score/churn` for one id: p50 <= 3 ms and p99 <= 10 ms at one
  connection; throughput at 8 connections >= 60% of a bare BentoML endpoint returning a
  constant.
- `/v1/outreach/queue` with limit 1,000: p99 <= 50 ms.
- `score_batch` for 1,000,000 customers and their open shipments, with reasons for the
  selected actions: <= 60 s and <= 2.5x plain LightGBM prediction of the same rows.

The load comes from `benchmarks.load`, a second process on loopback (no wrk or locust
needed). The service runs on a small simulated business built once under
`<out>/serving/data` (latency hardly depends on its size); the batch rows are that business's
latest feature rows resampled to the requested number of customers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from serving.access import SCOPES, new_secret
from serving.tokens import mint

ROOT = Path(__file__).resolve().parent.parent
SERVE_CUSTOMERS = 3_000
LOAD_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _served_data(out: Path) -> Path:
    """A data folder with champions, online features and a queue (built once)."""
    folder = out / "serving" / "data"
    # The marker names what was trained: a folder built before the uplift model is rebuilt.
    built = folder / ".built-with-uplift"
    if built.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, "AFTERSALE_DATA_DIR": str(folder)}
    steps = [
        ["ingest", "--customers", str(SERVE_CUSTOMERS)],
        ["features", "build"],
        ["train", "-m", "delay_risk", "-m", "churn", "-m", "next_best_offer"],
        ["train", "-m", "outreach_uplift"],
        ["score", "--top", "0"],
    ]
    for step in steps:
        subprocess.run([sys.executable, "-m", "aftersale.cli", *step], env=env, check=True)
    built.touch()
    return folder


class _Server:
    """`bentoml serve` of one service in a child process."""

    def __init__(self, target: str, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--working-dir", str(ROOT)]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def __enter__(self) -> _Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("bentoml serve exited")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError("bentoml serve was not ready in time")

    def __exit__(self, *_) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


# The load's API key, with every scope, and its tracking-token secret, fresh for each run.
KEY = new_secret()
TOKEN_SECRET = new_secret()


def _load(url: str, path: str, body: dict, connections: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.load", url, path, json.dumps(body)]
    command += ["--connections", str(connections), "--seconds", str(LOAD_SECONDS)]
    env = {**os.environ, "AFTERSALE_KEY": KEY}
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _show(label: str, r: dict) -> None:
    print(
        f"  {label:<44} {r['connections']} conn: {r['rps']:7.0f} req/s  "
        f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
    )


def bench_serving(customers: int, out: Path) -> None:
    print("\n## serving over HTTP (load from a second process on loopback)")
    folder = _served_data(out)
    import pyarrow.parquet as pq

    queue = pq.read_table(folder / "serving" / "outreach_queue.parquet")
    as_of = json.loads(queue.schema.metadata[b"aftersale"])["as_of"]
    env = {
        **os.environ,
        "AFTERSALE_DATA_DIR": str(folder),
        "AFTERSALE_AS_OF": as_of,
        "AFTERSALE_API_KEYS": f"bench:{'+'.join(SCOPES)}:{KEY}",
        "AFTERSALE_TOKEN_SECRET": TOKEN_SECRET,
        # One load client is far past a tracking page's per-client limit: lift it here.
        "AFTERSALE_TRACKING_RATE_LIMIT": "1000000/second",
    }
    customer = pq.read_table(folder / "raw" / "current" / "customers.parquet")["customer_id"][0]
    orders = pq.read_table(folder / "raw" / "current" / "orders.parquet")
    order = orders.sort_by([("order_ts", "descending")])["order_id"][0].as_py()
    results = {}
    with _Server("benchmarks.bare_service:Bare", env) as bare:
        for n in (1, 8):
            results[("bare", n)] = _load(bare.url, "/v1/constant", {"ids": ["c1"]}, n)
            _show("bare endpoint (constant, async)", results[("bare", n)])
        for n in (1, 8):
            sync = _load(bare.url, "/v1/constant_sync", {"ids": ["c1"]}, n)
            _show("bare endpoint (constant, thread pool)", sync)
    with _Server("serving.service:Aftersale", env) as served:
        churn = {"customer_ids": [customer.as_py()]}
        for n in (1, 8):
            results[("churn", n)] = _load(served.url, "/v1/score/churn", churn, n)
            _show("/v1/score/churn, one id", results[("churn", n)])
        offers = {"order_id": order, "k": 3, "token": mint(order, TOKEN_SECRET.encode())}
        for n in (1, 8):
            results[("recommend", n)] = _load(served.url, "/v1/recommend", offers, n)
            _show("/v1/recommend, one order", results[("recommend", n)])
        results[("queue", 1)] = _load(served.url, "/v1/outreach/queue", {"limit": 1000}, 1)
        _show("/v1/outreach/queue, limit 1,000", results[("queue", 1)])
    for name in ("churn", "recommend"):
        one, eight = results[(name, 1)], results[(name, 8)]
        ratio = eight["rps"] / results[("bare", 8)]["rps"]
        print(
            f"  {name}, one connection: p50 {one['p50_ms']:.2f} ms (target <= 3), p99 "
            f"{one['p99_ms']:.2f} ms (<= 10); 8 connections: {ratio:.0%} of the async bare "
            "endpoint (>= 60%)"
        )
    print(f"  outreach queue p99 {results[('queue', 1)]['p99_ms']:.1f} ms (target <= 50)")


def _resample(frame: pd.DataFrame, n: int, key: str, seed: int) -> pd.DataFrame:
    rows = np.random.default_rng(seed).integers(0, len(frame), n)
    out = frame.iloc[rows].reset_index(drop=True)
    out[key] = [f"{key[0]}{i}" for i in range(n)]
    return out


def bench_score_batch(customers: int, out: Path) -> None:
    from aftersale.settings import Settings
    from flows.score_batch import load_inputs, load_models, rules_of
    from serving.batch import score_batch

    print(f"\n## score_batch ({customers:,} customers and their open shipments)")
    folder = _served_data(out)
    settings = Settings(data_dir=folder)
    inputs = load_inputs.fn(settings, None)
    models = load_models.fn(settings)
    small = inputs["customers"]
    open_per_customer = len(inputs["shipments"]) / max(len(small), 1)
    people = _resample(small, customers, "customer_id", 1)
    shipments = _resample(
        inputs["shipments"], round(customers * open_per_customer), "shipment_id", 2
    )
    shipments["customer_id"] = people["customer_id"].to_numpy()[
        np.random.default_rng(3).integers(0, customers, len(shipments))
    ]
    invoices = _resample(
        inputs["invoices"], round(customers * len(inputs["invoices"]) / len(small)), "invoice_id", 4
    )
    invoices["customer_id"] = people["customer_id"].to_numpy()[
        np.random.default_rng(5).integers(0, customers, len(invoices))
    ]
    history = inputs["history"].iloc[0:0]
    print(
        f"  {len(people):,} customers, {len(shipments):,} open shipments, "
        f"{len(invoices):,} overdue invoices; models: {', '.join(sorted(models))}"
    )

    from features.build.derived import add_time_features

    churn, delay = models["churn"], models["delay_risk"]
    x_churn = churn.matrix(add_time_features(people, inputs["as_of"]))
    x_delay = delay.matrix(add_time_features(shipments, inputs["as_of"]))
    started = time.perf_counter()
    churn.probability(x_churn)
    delay.probability(x_delay)
    plain = time.perf_counter() - started

    started = time.perf_counter()
    result = score_batch(
        models, people, shipments, invoices, history, inputs["as_of"], rules_of(settings)
    )
    total = time.perf_counter() - started
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    # Reading the latest stored row per customer, as the flow does, from a Parquet folder.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.store.latest import latest_rows

    folder = out / "serving" / "customer_snapshots"
    folder.mkdir(parents=True, exist_ok=True)
    stamped = pa.Table.from_pandas(people, preserve_index=False)
    instant = pa.array([inputs["as_of"].to_pydatetime()] * len(people), pa.timestamp("us", "UTC"))
    stamped = stamped.append_column("event_ts", instant).append_column("created_ts", instant)
    pq.write_table(stamped, folder / "part-00000.parquet")
    started = time.perf_counter()
    read = latest_rows(folder, "customer_id", inputs["as_of"])
    reading = time.perf_counter() - started
    print(f"  latest stored row per customer from Parquet: {reading:.1f} s ({len(read):,} rows)")
    print(f"  plain LightGBM prediction of the same rows: {plain:.1f} s")
    print(
        f"  score_batch: {total:.1f} s ({parts}); {len(result.queue):,} actions queued with "
        f"reasons; {total / plain:.2f}x plain prediction (target <= 2.5x, <= 60 s)"
    )
