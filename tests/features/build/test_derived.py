"""Decision-time features: the frame path (training, batch) and the per-record path
(serving) agree, and the definitions say what they mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.build.derived import add_time_features, derive_record

NOW = pd.Timestamp("2025-03-10 12:00", tz="UTC")
DAY = 86_400.0


def random_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = NOW.timestamp()

    def maybe(values):
        return np.where(rng.random(n) < 0.25, np.nan, values)

    return pd.DataFrame(
        {
            "signup_epoch": t - rng.uniform(10, 900, n) * DAY,
            "first_order_epoch": maybe(t - rng.uniform(0, 700, n) * DAY),
            "last_order_epoch": maybe(t - rng.uniform(0, 200, n) * DAY),
            "last_contact_epoch": maybe(t - rng.uniform(0, 300, n) * DAY),
            "last_experience_epoch": maybe(t - rng.uniform(0, 150, n) * DAY),
            "orders_total": rng.integers(0, 12, n).astype(float),
            "orders_365d": rng.integers(0, 8, n).astype(float),
            "monetary_total": maybe(rng.uniform(0, 900, n)),
            "category_spend_total": maybe(rng.uniform(0, 300, n)),
            "shipped_epoch": t - rng.uniform(0, 5, n) * DAY,
            "promised_epoch": t + rng.uniform(-3, 3, n) * DAY,
            "last_scan_epoch": maybe(t - rng.uniform(0, 2, n) * DAY),
        }
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_record_path_equals_frame_path(seed) -> None:
    rows = random_rows(50, seed)
    frame = add_time_features(rows, NOW)
    records = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    got = pd.DataFrame([derive_record(r, NOW.timestamp()) for r in records])
    derived = [c for c in frame.columns if c not in rows.columns]
    assert set(derived) <= set(got.columns)
    for column in derived:
        np.testing.assert_allclose(
            got[column].astype(float), frame[column].astype(float), err_msg=column
        )


def test_rates_measure_orders_per_active_day() -> None:
    t = NOW.timestamp()
    rows = pd.DataFrame(
        {
            "first_order_epoch": [t - 100 * DAY, t - 3 * DAY, np.nan],
            "last_order_epoch": [t - 20 * DAY, t - 3 * DAY, np.nan],
            "orders_total": [5.0, 1.0, 0.0],
            "orders_365d": [5.0, 1.0, 0.0],
        }
    )
    out = add_time_features(rows, NOW)
    # Five orders over 100 days; a three-day-old customer is measured over 30 days.
    np.testing.assert_allclose(out["orders_per_day"], [0.05, 1 / 30, 0.0])
    np.testing.assert_allclose(out["expected_orders_missed"].iloc[:2], [1.0, 0.1])
    assert out["decision_month"].tolist() == [3.0, 3.0, 3.0]
