"""Peak memory of fitting delay risk's LightGBM on a synthetic frame of its features.

`python -m benchmarks.fit_memory --rows 300000` builds a frame with the delay model's
feature columns (its Feast view's numbers and categories and the derived hours), splits it
70/15/15 in order, and fits `training.fit.fit_lightgbm` for a fixed number of trees. It
prints the process's resident memory before the fit and its peak during it: the peak is
reset just before the fit (Linux `clear_refs`), so building the frame does not count.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import numpy as np
import pandas as pd

# Distinct values per categorical feature, about as many as the simulator's.
CARDINALITY = {
    "carrier": 4,
    "service_level": 3,
    "origin_region": 6,
    "destination_region": 16,
    "lane": 96,
    "stage": 5,
    "last_event_type": 5,
}


def delay_features() -> tuple[list[str], list[str]]:
    """The delay model's input columns and its categorical ones."""
    from features.repo.shipment_views import shipment_events
    from models.delay_risk import SPEC

    viewed = [field.name for field in shipment_events.features]
    features = [f for f in [*viewed, *SPEC.derived] if f not in SPEC.exclude]
    return features, list(SPEC.categorical)


def synthetic_frame(rows: int, features: list[str], categorical: list[str]) -> pd.DataFrame:
    """Rows with numbers, categories (strings, some missing) and a label that depends on
    a few of them."""
    generator = np.random.default_rng(7)
    columns: dict[str, object] = {}
    for name in features:
        if name in categorical:
            values = np.array([f"{name}-{i}" for i in range(CARDINALITY.get(name, 8))], object)
            picked = values[generator.integers(0, len(values), rows)]
            picked[generator.random(rows) < 0.02] = None
            columns[name] = picked
        else:
            numbers = generator.gamma(2.0, 10.0, rows)
            numbers[generator.random(rows) < 0.05] = np.nan
            columns[name] = numbers
    frame = pd.DataFrame(columns)
    numeric = [f for f in features if f not in categorical][:3]
    signal = sum(np.nan_to_num(frame[name].to_numpy()) / 20.0 for name in numeric)
    late = generator.random(rows) < 1.0 / (1.0 + np.exp(-(signal - 3.0)))
    frame["label"] = late.astype(np.int64)
    return frame


def resident_kib() -> tuple[int, int]:
    """This process's resident memory now and its peak since the last reset, KiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fit_memory")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--trees", type=int, default=50)
    args = parser.parse_args()

    from training.fit import fit_lightgbm, layout_from_train

    features, categorical = delay_features()
    frame = synthetic_frame(args.rows, features, categorical)
    cut_valid, cut_test = int(args.rows * 0.7), int(args.rows * 0.85)
    # As the trainer does: each window a frame of its own.
    train = frame.iloc[:cut_valid].copy()
    valid = frame.iloc[cut_valid:cut_test].copy()
    layout = layout_from_train(train, features, categorical)
    gc.collect()
    # Reset the peak resident size (VmHWM) so the peak below is the fit's alone.
    Path("/proc/self/clear_refs").write_text("5")
    before_kib, _ = resident_kib()
    started = time.perf_counter()
    fitted = fit_lightgbm(
        train,
        valid,
        layout,
        params={"metric": "auc"},
        num_boost_round=args.trees,
        early_stopping_rounds=0,
    )
    seconds = time.perf_counter() - started
    _, peak_kib = resident_kib()
    print(
        f"{args.rows:,} rows x {len(features)} features ({len(train):,} train): "
        f"resident before the fit {before_kib / 1024:.0f} MiB, peak during it "
        f"{peak_kib / 1024:.0f} MiB (+{(peak_kib - before_kib) / 1024:.0f} MiB), "
        f"{seconds:.1f} s, validation AUC {fitted.valid_score:.4f}"
    )


if __name__ == "__main__":
    main()
