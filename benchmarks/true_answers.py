"""Audit of the answers against the raw tables: `python -m benchmarks.true_answers`.

Run after `make demo` (or on any data folder, `AFTERSALE_DATA_DIR`): it starts the service's
runtime in process at `AFTERSALE_AS_OF` (default 2025-12-31T23:44:13Z, inside the demo's
last day), asks it about delivered, long-open and in-transit parcels and a sample of
customers, reads the day's outreach queue, and prints each count beside what the raw tables
say at the same instant. Every "wrong" count should be 0. The tests hold the same
properties on small data (`tests/serving/test_service.py`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

SAMPLE_CUSTOMERS = 695
BATCH = 100


def _batched(score, ids: list[str]) -> list:
    answers = []
    for start in range(0, len(ids), BATCH):
        answers += score(ids[start : start + BATCH]).results
    return answers


def main() -> None:
    os.environ.setdefault("AFTERSALE_AS_OF", "2025-12-31T23:44:13Z")
    from aftersale.settings import get_settings
    from serving.runtime import Runtime

    settings = get_settings()
    runtime = Runtime.start(settings)
    at = runtime.now()
    raw = settings.raw_root / "current"
    ships = pd.read_parquet(raw / "shipments.parquet")
    orders = pd.read_parquet(raw / "orders.parquet")
    contacts = pd.read_parquet(raw / "contacts.parquet")
    customers = pd.read_parquet(raw / "customers.parquet")
    queue = pd.read_parquet(settings.serving_dir / "outreach_queue.parquet")
    print(f"as of {at}")

    delivered = ships[ships["delivered_ts"] <= at]
    recent = delivered[delivered["delivered_ts"] > at - pd.Timedelta(days=30)]
    recent = recent[recent["delivered_ts"] < at - pd.Timedelta(days=3)].head(20)
    answers = _batched(runtime.score_delay, recent["shipment_id"].tolist())
    wrong = sum(a.status != "delivered" for a in answers)
    print(f"delivered 3-30 days before, not answered delivered: {wrong} of {len(answers)}")

    open_ = ships[(ships["shipped_ts"] <= at) & ~(ships["delivered_ts"] <= at)]
    old = open_[open_["shipped_ts"] < at - pd.Timedelta(days=70)]
    answers = _batched(runtime.score_delay, old["shipment_id"].tolist())
    windows = sum(a.delivery_window is not None for a in answers)
    print(f"open parcels dispatched over 70 days ago with a window: {windows} of {len(answers)}")
    answers = _batched(runtime.score_delay, open_["shipment_id"].tolist())
    windows = [a.delivery_window for a in answers if a.delivery_window is not None]
    zero = sum(w.earliest >= w.latest for w in windows)
    print(f"open parcels with a zero-width window: {zero} of {len(windows)}")
    later = sum(a.features_as_of is not None and a.features_as_of > at for a in answers)
    print(f"delay answers from a state after the decision instant: {later} of {len(answers)}")

    sample = customers["customer_id"].sample(SAMPLE_CUSTOMERS, random_state=1).tolist()
    scored = [a for a in _batched(runtime.score_churn, sample) if a.status == "ok"]
    later = sum(a.features_as_of > at for a in scored)
    print(f"churn answers from a state after the decision instant: {later} of {len(scored)}")
    had = contacts[contacts["ts"] < at].groupby("customer_id")["reason"].agg(set)
    never = [a for a in scored if a.customer_id not in had.index]
    wrong = sum(a.contact_reason != "no_contact" for a in never)
    print(f"never-contacted customers named a contact reason: {wrong} of {len(never)}")
    contacted = [a for a in scored if a.customer_id in had.index]
    wrong = sum(a.contact_reason not in had[a.customer_id] for a in contacted)
    print(f"contacted customers named a reason not in their contacts: {wrong} of {len(contacted)}")

    about_customer = queue[
        queue["action"].isin(["winback_offer", "service_recovery_call"])
        & queue["subject_id"].isna()
    ]
    online = {
        a.customer_id: a.probability
        for a in _batched(runtime.score_churn, about_customer["customer_id"].tolist())
    }
    never_contacted = ~about_customer["customer_id"].isin(had.index)
    driven = about_customer["reason"].str.contains("driven by")
    print(
        "queued churn actions 'driven by' a reason for a never-contacted customer: "
        f"{int((never_contacted & driven).sum())} of {len(about_customer)}"
    )
    gap = np.abs(about_customer["customer_id"].map(online) - about_customer["risk"])
    print(
        f"queue against online churn: {int((gap > 1e-9).sum())} differ, "
        f"{int((gap > 0.05).sum())} by over 5 points, of {len(gap)}"
    )
    notices = queue[queue["action"] == "delay_notice"]
    lost = queue[(queue["action"] == "service_recovery_call") & queue["subject_id"].notna()]
    print(f"queue: {len(notices)} delay notices, {len(lost)} recovery calls about lost parcels")
    today = orders[(orders["order_ts"] >= at.floor("D")) & (orders["order_ts"] < at)]
    records = runtime.readers["churn"].read([[c] for c in today["customer_id"]], at)
    before = orders[orders["order_ts"] < at].groupby("customer_id").size()
    wrong = sum(
        r is None or r["orders_total"] != before[c]
        for c, r in zip(today["customer_id"], records, strict=True)
    )
    print(f"customers ordering on the decision day, order count not seen: {wrong} of {len(today)}")


if __name__ == "__main__":
    main()
