"""Training at scale: every model trained on a large business, each in a process of its own,
with its wall time, its peak resident memory and its test figure beside the same model's on
the default business, trained in the same run.

Targets (scale-out): all the models trained on 1,000,000 customers in at most 20 minutes in
all, at most 8 GiB resident in every process, and each model's test figure at least the
default business's (20,000 customers).

Each business is the seeded simulation (`<out>/sim-<N>`, reused when present), ingested and
built into features the production way (`flows.ingest`, `flows.build_features`) in a fresh
`<out>/scale-<N>`. Each model then trains through `training.trainers.train_model` (read,
label, retrieve, fit, calibrate, explain, log and register) in a fresh process, so the
process's peak resident memory (`peak_rss_gib`, which the process reads as it ends) is that
model's own and nothing one model left behind weighs on the next. The label events each
model keeps are bounded by its `max_events` (a seeded sample of whole entities), and DuckDB
by `duckdb_memory_limit`.

`python -m benchmarks train_scale --customers 1000000` (about 40 minutes on 2 cores: the
simulation, the feature build, then the five models at each size) writes
`<out>/train_scale-<N>.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CUSTOMERS = 20_000
TARGET_SECONDS = 20 * 60
TARGET_RSS_GIB = 8.0
MODELS = ("delay_risk", "churn", "next_best_offer", "delivery_estimate", "outreach_uplift")


def prepared(customers: int, out: Path) -> Path:
    """The data folder of the seeded business of `customers`: raw data ingested and feature
    tables built, in a fresh `<out>/scale-<customers>/data`."""
    import shutil

    from benchmarks.training import simulation
    from flows.build_features import build_features
    from flows.ingest import ingest

    sim = simulation(customers, out)
    root = out / f"scale-{customers}"
    shutil.rmtree(root, ignore_errors=True)
    data = root / "data"
    previous = os.environ.get("AFTERSALE_DATA_DIR")
    os.environ["AFTERSALE_DATA_DIR"] = str(data)
    try:
        started = time.perf_counter()
        ingest(source="folder", path=sim)
        build_features(materialize_to_online=False)
    finally:
        if previous is None:
            os.environ.pop("AFTERSALE_DATA_DIR", None)
        else:
            os.environ["AFTERSALE_DATA_DIR"] = previous
    print(f"  ingested and built in {time.perf_counter() - started:.1f} s")
    return data


def peak_rss_gib() -> float:
    """This process's own peak resident memory, in GiB (`aftersale.memory.peak_resident_bytes`:
    Linux's `VmHWM`, not `ru_maxrss`, which carries the parent's peak across `exec`)."""
    from aftersale.memory import peak_resident_bytes

    return peak_resident_bytes() / 2**30


def train_one(data: Path, name: str, figures: Path) -> None:
    """Train one model on the data folder and write its figures (JSON) to `figures`."""
    from aftersale.settings import Settings
    from features.store.config import feature_store
    from models import MODELS as SPECS
    from training.trainers import train_model

    settings = Settings(data_dir=data)
    spec = SPECS[name]
    started = time.perf_counter()
    result = train_model(spec, feature_store(settings), settings)
    figures.write_text(
        json.dumps(
            {
                "model": name,
                "seconds": time.perf_counter() - started,
                "metric": spec.primary_metric,
                "higher_is_better": spec.higher_is_better,
                "value": float(result.metrics[spec.primary_metric]),
                # Its interval where the trainer logs one (`<metric>_low`, `_high`), at the
                # trainer's own level.
                "interval": [
                    float(result.metrics[f"{spec.primary_metric}_{end}"])
                    for end in ("low", "high")
                    if f"{spec.primary_metric}_{end}" in result.metrics
                ],
                "test_rows": len(result.scores),
                "stages": {k: round(float(v), 1) for k, v in result.seconds.items()},
                "peak_rss_gib": peak_rss_gib(),
            }
        )
    )


def measured(data: Path, name: str, folder: Path, environment: dict | None = None) -> dict:
    """`train_one` in a fresh process (with `environment` added to this one's): its
    figures, wall time and peak resident memory."""
    figures = folder / f"{name}.json"
    figures.unlink(missing_ok=True)
    env = {**os.environ, **(environment or {}), "AFTERSALE_DATA_DIR": str(data)}
    env.pop("AFTERSALE_MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.train_scale", str(data), name, str(figures)], env=env
    )
    child.wait()
    wall = time.perf_counter() - started
    if child.returncode != 0 or not figures.is_file():
        return {"model": name, "failed": child.returncode, "wall_seconds": wall}
    # The peak is the child's own (`peak_rss_gib`), measured as it ends.
    return {**json.loads(figures.read_text()), "wall_seconds": wall}


def compare(runs: list[dict], default: list[dict]) -> dict:
    """The large business's runs against the targets and the default business's figures.

    Returns:
        `models`: each model's run with `default_value`, `default_interval` (empty where the
        default's run logged none) and `kept` (its figure at least the
        default's, in the metric's direction; False where either run failed), `seconds`
        (all models), `peak_rss_gib` (the largest process), and the three targets' verdicts.
    """
    by_name = {run["model"]: run for run in default}
    models = []
    for run in runs:
        base = by_name.get(run["model"], {})
        beside = {"default_value": base.get("value"), "default_interval": base.get("interval", [])}
        if "failed" in run or "failed" in base or not base:
            models.append({**run, **beside, "kept": False})
            continue
        sign = 1 if run["higher_is_better"] else -1
        kept = sign * (run["value"] - base["value"]) >= 0
        models.append({**run, **beside, "kept": kept})
    seconds = sum(run["wall_seconds"] for run in runs)
    peak = max((run.get("peak_rss_gib", 0.0) for run in runs), default=0.0)
    return {
        "models": models,
        "seconds": seconds,
        "peak_rss_gib": peak,
        "time_target": "met" if seconds <= TARGET_SECONDS else "missed",
        "memory_target": "met" if peak <= TARGET_RSS_GIB else "missed",
        "figures_target": "met" if all(m["kept"] for m in models) else "missed",
    }


def bench_train_scale(customers: int, out: Path, models: tuple[str, ...] = MODELS) -> dict:
    """Train every model on `customers` and on the default business; print and write the
    figures against the targets."""
    print(f"\n## train_scale --customers {customers:,} (beside {DEFAULT_CUSTOMERS:,})")
    runs: dict[int, list[dict]] = {}
    for size in dict.fromkeys((DEFAULT_CUSTOMERS, customers)):
        data = prepared(size, out)
        folder = data.parent / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        runs[size] = [measured(data, name, folder) for name in models]
    found = compare(runs[customers], runs[DEFAULT_CUSTOMERS])
    print(
        f"  {'model':<18} {'metric':<16} {f'at {customers:,}':>12} "
        f"{f'at {DEFAULT_CUSTOMERS:,}':>12} {'vs default':>10} {'seconds':>8} {'peak GiB':>9}"
    )
    for run in found["models"]:
        if "failed" in run:
            print(
                f"  {run['model']:<18} failed (exit {run['failed']}) "
                f"after {run['wall_seconds']:.0f} s"
            )
            continue
        base = run["default_value"]
        print(
            f"  {run['model']:<18} {run['metric']:<16} {run['value']:>12.4f} "
            f"{float('nan') if base is None else base:>12.4f} "
            f"{'kept' if run['kept'] else 'below':>10} {run['wall_seconds']:>8.1f} "
            f"{run['peak_rss_gib']:>9.2f}"
        )
    for run in found["models"]:
        if run.get("interval") and run["default_interval"]:
            low, high = run["interval"]
            base_low, base_high = run["default_interval"]
            print(
                f"  {run['model']}: intervals [{low:.4f}, {high:.4f}] at {customers:,}, "
                f"[{base_low:.4f}, {base_high:.4f}] at {DEFAULT_CUSTOMERS:,}"
            )
    below = [run["model"] for run in found["models"] if not run["kept"]]
    print(
        f"  all models: {found['seconds']:.0f} s (target ≤ {TARGET_SECONDS} s: "
        f"{found['time_target']}); largest process {found['peak_rss_gib']:.2f} GiB (target ≤ "
        f"{TARGET_RSS_GIB:.0f} GiB: {found['memory_target']}); test figures at least the "
        f"default's: {found['figures_target']}{' (' + ', '.join(below) + ')' if below else ''}"
    )
    report = {
        "customers": customers,
        "default_customers": DEFAULT_CUSTOMERS,
        **{k: v for k, v in found.items() if k != "models"},
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train_scale-{customers}.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    train_one(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
