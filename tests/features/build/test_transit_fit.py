"""The expected transit of a parcel is a least-squares fit on the parcels delivered before
the row's day only, equal to an independent fit on hand-made data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.build.shipments import (
    TRANSIT_FIT_DAYS,
    TRANSIT_MIN_DELIVERIES,
    shipment_features,
)
from features.contract.schema import CONTRACT

START = datetime(2024, 1, 1, tzinfo=UTC)
PARCELS = 600
CARRIERS = ("fast", "slow")


def to_tables(frames: dict[str, pd.DataFrame]) -> dict[str, pa.Table]:
    out = {}
    for name, frame in frames.items():
        schema = pa.schema([f for f in CONTRACT[name].arrow_schema if f.name in frame.columns])
        out[name] = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return out


def history(seed: int = 3) -> dict[str, pd.DataFrame]:
    """Parcels of two carriers over 400 days, the last one dispatched on day 400; transit
    grows with distance and weight, and two parcels are lost."""
    rng = np.random.default_rng(seed)
    shipped = [START + timedelta(days=float(d)) for d in np.sort(rng.uniform(0, 399, PARCELS))]
    shipped.append(START + timedelta(days=400, hours=15))
    n = len(shipped)
    carrier = rng.choice(CARRIERS, n)
    distance = np.round(rng.uniform(50, 1500, n), 1)
    products = rng.integers(0, 3, n)
    weight_g = np.array([400.0, 2500.0, 9000.0])[products]
    log_hours = (
        np.log(np.where(carrier == "fast", 20.0, 40.0))
        + 0.3 * distance / 1000
        + 0.02 * weight_g / 1000
        + 0.3 * rng.standard_normal(n)
    )
    delivered = [
        s + timedelta(hours=float(np.exp(h))) for s, h in zip(shipped, log_hours, strict=True)
    ]
    delivered[5] = delivered[9] = None
    ids = [f"s{i}" for i in range(n)]
    orders = [f"o{i}" for i in range(n)]
    return {
        "orders": pd.DataFrame(
            {
                "order_id": orders,
                "customer_id": ["c"] * n,
                "order_ts": [s - timedelta(hours=6) for s in shipped],
                "amount": [20.0] * n,
                "payment_method": ["card"] * n,
            }
        ),
        "products": pd.DataFrame(
            {
                "product_id": ["p0", "p1", "p2"],
                "category": ["books"] * 3,
                "price": [10.0] * 3,
                "margin": [0.2] * 3,
                "weight_g": [400.0, 2500.0, 9000.0],
            }
        ),
        "order_items": pd.DataFrame(
            {
                "order_id": orders,
                "product_id": [f"p{p}" for p in products],
                "qty": [1] * n,
                "unit_price": [10.0] * n,
            }
        ),
        "shipments": pd.DataFrame(
            {
                "shipment_id": ids,
                "order_id": orders,
                "carrier": carrier,
                "service_level": ["standard"] * n,
                "origin_region": ["DE"] * n,
                "destination_region": ["FR"] * n,
                "distance_km": distance,
                "shipped_ts": shipped,
                "promised_ts": [s + timedelta(days=2) for s in shipped],
                "delivered_ts": delivered,
            }
        ),
    }


def independent_fit(raw: dict[str, pd.DataFrame], row: pd.Series) -> tuple[float, float, float]:
    """Expected log transit hours, spread and slack of a dispatch row, by a least-squares fit
    with one dummy per (carrier, level, weekday) on the parcels delivered in the
    `TRANSIT_FIT_DAYS` days before the row's day."""
    ships = raw["shipments"].copy()
    weights = raw["products"].set_index("product_id")["weight_g"]
    ships["weight_kg"] = raw["order_items"]["product_id"].map(weights).to_numpy() / 1000
    day = pd.Timestamp(row["event_ts"]).floor("D")
    delivered = pd.to_datetime(ships["delivered_ts"], utc=True)
    ships["cell"] = (
        ships["carrier"]
        + "|"
        + ships["service_level"]
        + "|"
        + pd.to_datetime(ships["shipped_ts"], utc=True).dt.weekday.astype(str)
    )
    known = (delivered < day) & (delivered >= day - pd.Timedelta(days=TRANSIT_FIT_DAYS))
    train = ships[known]
    hours = (delivered[known] - pd.to_datetime(train["shipped_ts"], utc=True)).dt.total_seconds()
    y = np.log(hours.to_numpy() / 3600)
    cells = sorted(train["cell"].unique())
    design = np.column_stack(
        [(train["cell"] == c).to_numpy(float) for c in cells]
        + [train["distance_km"].to_numpy() / 1000, train["weight_kg"].to_numpy()]
    )
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    target = ships.set_index("shipment_id").loc[row["shipment_id"]]
    assert (train["cell"] == target["cell"]).sum() >= TRANSIT_MIN_DELIVERIES
    expected = (
        beta[cells.index(target["cell"])]
        + beta[-2] * target["distance_km"] / 1000
        + beta[-1] * target["weight_kg"]
    )
    residual = y - design @ beta
    own = train["carrier"].eq(target["carrier"]).to_numpy()
    own_cells = train.loc[own, "cell"].nunique()
    spread = np.sqrt((residual[own] ** 2).sum() / (own.sum() - own_cells))
    promise_h = (target["promised_ts"] - target["shipped_ts"]).total_seconds() / 3600
    return expected, spread, (np.log(promise_h) - expected) / spread


def last_dispatch(raw: dict[str, pd.DataFrame]) -> pd.Series:
    features = shipment_features(to_tables(raw)).to_pandas()
    last = raw["shipments"]["shipment_id"].iloc[-1]
    return features[(features["shipment_id"] == last) & (features["stage"] == "dispatch")].iloc[0]


def test_expected_transit_equals_an_independent_fit_on_earlier_deliveries() -> None:
    raw = history()
    row = last_dispatch(raw)
    expected, spread, slack = independent_fit(raw, row)
    assert row["expected_log_transit_hours"] == pytest.approx(expected, rel=1e-9)
    assert row["transit_log_spread"] == pytest.approx(spread, rel=1e-9)
    assert row["promise_slack_spreads"] == pytest.approx(slack, rel=1e-9)
    # Near the log transit the parcel was drawn around.
    target = raw["shipments"].iloc[-1]
    weight_kg = (
        raw["products"].set_index("product_id")["weight_g"][
            raw["order_items"]["product_id"].iloc[-1]
        ]
        / 1000
    )
    drawn = (
        np.log(20.0 if target["carrier"] == "fast" else 40.0)
        + 0.3 * target["distance_km"] / 1000
        + 0.02 * weight_kg
    )
    assert expected == pytest.approx(drawn, abs=0.1)


def test_expected_transit_ignores_deliveries_from_the_rows_day_on() -> None:
    raw = history()
    before = last_dispatch(raw)
    ships = raw["shipments"]
    day = pd.Timestamp(before["event_ts"]).floor("D")
    # Parcels delivered on the row's day or later took ten times as long: nothing changes.
    later = pd.to_datetime(ships["delivered_ts"], utc=True) >= day
    assert later.sum() > 0
    slowed = ships["shipped_ts"] + 10 * (ships["delivered_ts"] - ships["shipped_ts"])
    raw["shipments"] = ships.assign(delivered_ts=ships["delivered_ts"].where(~later, slowed))
    after = last_dispatch(raw)
    columns = ["expected_log_transit_hours", "transit_log_spread", "promise_slack_spreads"]
    assert after[columns].to_dict() == before[columns].to_dict()
    # The parcels delivered before the row's day are counted: slowing them moves the fit.
    raw["shipments"] = ships.assign(delivered_ts=ships["delivered_ts"].where(later, slowed))
    moved = last_dispatch(raw)["expected_log_transit_hours"]
    assert moved == pytest.approx(before["expected_log_transit_hours"] + np.log(10), abs=0.5)


def test_a_cell_with_too_few_deliveries_has_no_expected_transit() -> None:
    raw = history()
    ships = raw["shipments"]
    # The last parcel goes by a carrier nobody used before.
    raw["shipments"] = ships.assign(carrier=[*ships["carrier"].iloc[:-1], "new"])
    row = last_dispatch(raw)
    assert np.isnan(row["expected_log_transit_hours"])
    assert np.isnan(row["transit_log_spread"])
    assert np.isnan(row["promise_slack_spreads"])
