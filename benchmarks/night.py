"""Night benchmark: one night of the pipeline, stage by stage, without and with retraining.

A business of `--customers` is simulated as its history up to `HISTORY_END` and the batches
of the two following days (each cut from the same seeded simulation). A first night ingests
the history and trains every model; it is timed but is not the figure. The next day's night
runs with no model due (any retraining mark the first night's monitor left is cleared): the
target is at most 5 minutes at 1,000,000 customers. The day after runs with every model marked
for retraining, so it trains them all through the champion gate. Each night is reported by
stage (ingest, features, materialise, train, score, monitor, as the pipeline shows them).

Run: `python -m benchmarks night --customers 100000` (outputs under `<out>/night-<N>/`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

HISTORY_END = date(2025, 12, 29)
DAYS = (HISTORY_END + timedelta(days=1), HISTORY_END + timedelta(days=2))
TARGET_SECONDS = 300.0
TARGET_CUSTOMERS = 1_000_000


def _night(path: Path) -> tuple[float, list[tuple[str, float]], dict[str, str]]:
    """One pipeline night on `path`: its seconds, its stages' seconds and the models due."""
    from rich.console import Console

    from aftersale.console import StageDisplay
    from flows.pipeline import pipeline

    display = StageDisplay(Console(), opening="start (Prefect)")
    started = time.perf_counter()
    with display:
        night = pipeline(source="folder", path=path)
    seconds = time.perf_counter() - started
    return seconds, [(n, s) for n, s, _ in display.finished], night.due


def _print_night(title: str, seconds: float, stages: list[tuple[str, float]], due) -> None:
    print(f"  {title}: {seconds:.1f} s; due: {', '.join(due) or 'none'}")
    for name, took in stages:
        print(f"    {name:<32} {took:8.1f} s")


def bench_night(customers: int, out: Path) -> dict[str, float]:
    """Simulate, run the first night, then time a night without and one with retraining.

    Returns:
        The figures (also printed, and written to `<out>/night-<N>/figures.json`).
    """
    from aftersale.settings import get_settings
    from features.sources.simulator import simulate_day, simulate_until
    from models import MODELS
    from models.served.retrain import MARKS_FILE, clear

    root = out / f"night-{customers}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.environ["AFTERSALE_DATA_DIR"] = str(root / "data")
    from rich.console import Console

    from aftersale.console import log_path, route_logs

    # The libraries' logs go to the data folder's log file, as a command's do.
    route_logs(log_path(get_settings()), verbose=False, console=Console(stderr=True))
    print(f"\n## night --customers {customers:,}")
    started = time.perf_counter()
    simulate_until(root / "history", HISTORY_END, customers=customers)
    for n, day in enumerate(DAYS, start=1):
        simulate_day(root / f"day-{n}", day, customers=customers)
    took = time.perf_counter() - started
    print(f"  simulated the history to {HISTORY_END} and two days in {took:.1f} s")

    first = _night(root / "history")
    _print_night("first night (history, every model trained)", *first)

    settings = get_settings()
    # The first night's monitor may mark a model: this night is the one without training.
    clear(settings.monitoring_dir, *MODELS)
    plain = _night(root / "day-1")
    _print_night(f"night of {DAYS[0]} without retraining", *plain)

    marks = {name: {"since": f"{DAYS[1]}T00:00:00+00:00", "reason": "benchmark"} for name in MODELS}
    (settings.monitoring_dir / MARKS_FILE).write_text(json.dumps(marks))
    retrained = _night(root / "day-2")
    _print_night(f"night of {DAYS[1]} retraining every model", *retrained)

    scale = TARGET_CUSTOMERS / customers
    figures = {
        "customers": float(customers),
        "first_night_seconds": first[0],
        "night_seconds": plain[0],
        "night_with_retraining_seconds": retrained[0],
        "night_extrapolated_to_1m_seconds": plain[0] * scale,
    }
    for name, took in plain[1]:
        figures[f"night_stage_{name.replace(' ', '_')}_seconds"] = took
    verdict = "met" if plain[0] <= TARGET_SECONDS else "missed"
    if customers >= TARGET_CUSTOMERS:
        print(
            f"  night without retraining {plain[0]:.1f} s "
            f"(target ≤ {TARGET_SECONDS:.0f} s: {verdict})"
        )
    else:
        print(
            f"  linear extrapolation to {TARGET_CUSTOMERS:,} customers: {plain[0] * scale:.0f} s "
            f"(target ≤ {TARGET_SECONDS:.0f} s), an estimate only: measure at that size"
        )
    (root / "figures.json").write_text(json.dumps(figures, indent=2))
    return figures
