"""Night benchmark: one night of the pipeline, stage by stage, without and with retraining.

A business of `--customers` is simulated as its history up to `HISTORY_END` and the batches
of the two following days (cut from one seeded simulation). A first night ingests
the history and trains every model; it is timed but is not the figure. The next day's night
runs with no model due (any retraining mark the first night's monitor left is cleared): the
target is at most 5 minutes at 1,000,000 customers. The day after runs with every model marked
for retraining, so it trains them all through the champion gate. Each night is reported by
stage (ingest, features, materialise, train, score, monitor, as the pipeline shows them).

Run: `python -m benchmarks night --customers 100000` (outputs under `<out>/night-<N>/`).

At 1,000,000 customers the first night's training alone takes hours on a small machine.
`--champions-from DIR` starts the registry from a copy of another night's (DIR is its data
folder, say `<out>/night-100000/data`): its champions were trained on the same history end,
so the first night trains nothing and only ingests, builds, materialises, scores and
monitors. The night without retraining does the same work as with champions trained at full
size. The night with retraining then trains every model on the full-size data; it is the
longest part (most of an hour at 1,000,000 customers on 2 cores), so with `--champions-from`
it runs only when asked (`--retraining-night`).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path
from unittest.mock import patch

HISTORY_END = date(2025, 12, 29)
DAYS = (HISTORY_END + timedelta(days=1), HISTORY_END + timedelta(days=2))
TARGET_SECONDS = 300.0
TARGET_CUSTOMERS = 1_000_000
# The monitor has its own target (at most 60 s at 1,000,000 customers); the night's target
# counts the stages before it.
MONITOR_TARGET_SECONDS = 60.0


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


def _is_monitor(stage: str) -> bool:
    """Whether a pipeline stage is part of the monitor (which ends with the delivery
    window's offsets, updated from what the monitor measured)."""
    return stage.startswith(("monitor", "update delivery-window offsets"))


def _print_night(title: str, seconds: float, stages: list[tuple[str, float]], due) -> None:
    print(f"  {title}: {seconds:.1f} s; due: {', '.join(due) or 'none'}")
    for name, took in stages:
        print(f"    {name:<32} {took:8.1f} s")


def copy_registry(source: Path, target: Path) -> None:
    """Copy a SQLite MLflow store (`<data>/mlflow`: `mlflow.db` and `artifacts/`) to
    `target`, pointing every path it records at the copy.

    The store records artifact locations as absolute paths; every text value naming the
    source folder is rewritten, whichever table holds it, so the copy reads and writes only
    its own artifacts.

    Raises:
        FileNotFoundError: `source` holds no `mlflow.db`.
    """
    source, target = source.resolve(), target.resolve()
    if not (source / "mlflow.db").is_file():
        raise FileNotFoundError(f"{source} holds no MLflow store (mlflow.db)")
    shutil.copytree(source, target)
    old, new = str(source), str(target)
    db = sqlite3.connect(target / "mlflow.db")
    with closing(db), db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in (c[1] for c in db.execute(f'PRAGMA table_info("{table}")')):
                db.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (old, new, old),
                )


def bench_night(
    customers: int,
    out: Path,
    champions_from: Path | None = None,
    retraining_night: bool = False,
) -> dict[str, float]:
    """Simulate, run the first night, then time a night without and one with retraining
    (with `champions_from`, the registry starts as a copy of that data folder's and the
    night with retraining runs only with `retraining_night`).

    Returns:
        The figures (also printed, and written to `<out>/night-<N>/figures.json`).
    """
    from aftersale.settings import get_settings
    from features.sources.simulator import simulate_cuts
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
    days = [(root / f"day-{n}", "day", day) for n, day in enumerate(DAYS, start=1)]
    cuts = [(root / "history", "history", HISTORY_END), *days]
    simulate_cuts(cuts, customers=customers, workers=os.cpu_count() or 1)
    took = time.perf_counter() - started
    print(f"  simulated the history to {HISTORY_END} and two days in {took:.1f} s")

    if champions_from is not None:
        copy_registry(champions_from / "mlflow", root / "data" / "mlflow")
        print(f"  champions from {champions_from}")
    first = _night(root / "history")
    trained = "models due trained" if champions_from is not None else "every model trained"
    _print_night(f"first night (history, {trained})", *first)

    settings = get_settings()
    # The first night's monitor may mark a model: this night is the one without training.
    clear(settings.monitoring_dir, *MODELS)
    plain = _night(root / "day-1")
    _print_night(f"night of {DAYS[0]} without retraining", *plain)

    scale = TARGET_CUSTOMERS / customers
    figures = {
        "customers": float(customers),
        "first_night_seconds": first[0],
        "night_seconds": plain[0],
        "night_extrapolated_to_1m_seconds": plain[0] * scale,
    }
    if champions_from is None or retraining_night:
        # Every model marked, so that each is due whatever its champion's age, and retrained
        # as a routine retrain is: the time split's model served, through the plain gate (a
        # marked one would serve its refit, `flows.train.train`).
        marks = {
            name: {"since": f"{DAYS[1]}T00:00:00+00:00", "reason": "benchmark"} for name in MODELS
        }
        (settings.monitoring_dir / MARKS_FILE).write_text(json.dumps(marks))
        with patch.dict(
            os.environ, AFTERSALE_REFIT_MARKED="false", AFTERSALE_MARKED_GATE_MARGIN="0"
        ):
            retrained = _night(root / "day-2")
        _print_night(f"night of {DAYS[1]} retraining every model", *retrained)
        figures["night_with_retraining_seconds"] = retrained[0]
    else:
        print(
            f"  night of {DAYS[1]} retraining every model: not run "
            "(champions copied; --retraining-night runs it)"
        )
    for name, took in plain[1]:
        figures[f"night_stage_{name.replace(' ', '_')}_seconds"] = took
    monitor = sum(took for name, took in plain[1] if _is_monitor(name))
    counted = plain[0] - monitor
    figures["night_before_monitor_seconds"] = counted
    figures["night_monitor_seconds"] = monitor
    print(
        f"  night without retraining before the monitor: {counted:.1f} s; monitor: {monitor:.1f} s"
    )
    if customers >= TARGET_CUSTOMERS:
        for what, took, target in (
            ("night before the monitor", counted, TARGET_SECONDS),
            ("monitor", monitor, MONITOR_TARGET_SECONDS),
        ):
            verdict = "met" if took <= target else "missed"
            print(f"  {what} {took:.1f} s (target ≤ {target:.0f} s: {verdict})")
    else:
        print(
            f"  linear extrapolation to {TARGET_CUSTOMERS:,} customers: {counted * scale:.0f} s "
            f"before the monitor (target ≤ {TARGET_SECONDS:.0f} s), "
            f"monitor {monitor * scale:.0f} s (target ≤ {MONITOR_TARGET_SECONDS:.0f} s), "
            "an estimate only: measure at that size"
        )
    (root / "figures.json").write_text(json.dumps(figures, indent=2))
    return figures
