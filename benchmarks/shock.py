"""A regime change, detected and repaired: a carrier slows down, the monitor finds it, the
retrain it triggers repairs delay risk.

The simulated business gets a `CarrierSlowdown` of ParcelOne from `SHOCK_DAY`. Delay risk is
trained on the history known the day before, and the monitor's realised AUC on the newest
labelled parcels is its level before the shock. Then the history is ingested as known some
days after the shock, once per check day, and the monitor runs on each: the first check day
that marks the model for retraining (when nothing did before the shock) is the detection.
The retrain the mark calls for (through the same champion gate) is then measured by the
same monitor.

`python -m benchmarks shock` runs it on the default business (`--customers`), with checks
every 7 days up to 8 weeks; the test suite runs it once on a small business.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

SHOCK_DAY = date(2025, 7, 1)
SHOCKED_CARRIER = "ParcelOne"
FACTOR = 1.8
MONTHS = 24
CHECK_DAYS = (7, 14, 21, 28, 35, 42, 49, 56)
WINDOW_DAYS = 28


def _quality(results) -> tuple[float, list[str]]:
    (result,) = [r for r in results if getattr(r, "model", None) == "delay_risk"]
    auc = float("nan") if result.quality is None else float(result.quality["roc_auc"])
    return auc, list(result.retrain or [])


def regime_change(
    root: Path,
    customers: int,
    seed: int = 7,
    check_days: tuple[int, ...] = CHECK_DAYS,
    window_days: int = WINDOW_DAYS,
) -> dict:
    """Run the shock and its repair under `root`; returns the figures (JSON-ready).

    The environment variable `AFTERSALE_DATA_DIR` is set to `root / "data"` for the run.
    """
    from features.sources.simulator import simulate_until
    from features.sources.simulator.params import DEFAULT_PARAMS, CarrierSlowdown
    from flows.build_features import build_features
    from flows.ingest import ingest
    from flows.monitor import monitor
    from flows.train import train

    params = replace(DEFAULT_PARAMS, shocks=(CarrierSlowdown(SHOCKED_CARRIER, SHOCK_DAY, FACTOR),))
    os.environ["AFTERSALE_DATA_DIR"] = str(root / "data")
    started = time.perf_counter()

    def known_until(day: date) -> None:
        folder = root / f"until-{day.isoformat()}"
        simulate_until(folder, day, customers, seed, months=MONTHS, params=params)
        ingest(source="folder", path=folder)
        build_features(materialize_to_online=False)

    known_until(SHOCK_DAY - timedelta(days=1))
    train(models=["delay_risk"])
    before, before_reasons = _quality(monitor(models=["delay_risk"], window_days=window_days))
    checks = []
    detected = None
    for days in check_days:
        known_until(SHOCK_DAY + timedelta(days=days))
        auc, reasons = _quality(monitor(models=["delay_risk"], window_days=window_days))
        checks.append({"days_after": days, "realised_auc": auc, "flagged": reasons})
        if reasons and detected is None:
            detected = days
            break
    summaries = train(models=["delay_risk"])
    after, after_reasons = _quality(monitor(models=["delay_risk"], window_days=window_days))
    return {
        "customers": customers,
        "shock": f"{SHOCKED_CARRIER} x{FACTOR} from {SHOCK_DAY}",
        "auc_before": before,
        "flagged_before": before_reasons,
        "checks": checks,
        "detected_days_after": detected,
        "retrained_promoted": bool(summaries and summaries[0].promoted),
        "auc_after_retrain": after,
        "flagged_after": after_reasons,
        "seconds": round(time.perf_counter() - started, 1),
    }


def bench_shock(customers: int, out: Path) -> None:
    """The regime change on the default business: days to detection, AUC before, at the
    detection and after the retrain."""
    root = out / "shock"
    figures = regime_change(root, min(customers, 20_000))
    (root / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    print(f"shock: {figures['shock']} ({figures['customers']:,} customers)")
    print(f"  realised AUC before the shock: {figures['auc_before']:.3f}")
    print(f"  flagged before it: {'; '.join(figures['flagged_before']) or 'nothing'}")
    for check in figures["checks"]:
        verdict = "; ".join(check["flagged"]) or "not flagged"
        print(f"  +{check['days_after']} days: realised AUC {check['realised_auc']:.3f}, {verdict}")
    print(f"  detected after {figures['detected_days_after']} days")
    gap = figures["auc_before"] - figures["auc_after_retrain"]
    verdict = "PASS" if gap <= 0.02 else "MISS"
    print(
        f"  after the retrain: realised AUC {figures['auc_after_retrain']:.3f} "
        f"({gap:+.3f} below before; target within 0.02: {verdict}), {figures['seconds']} s"
    )
