"""Growth benchmark: each stage's time and peak memory as the business grows, and the
fitted exponent of its cost against customers.

For each size (100,000, 300,000 and 1,000,000 customers by default, 3,000,000 with
`--customers 3000000`), smallest first, one size at a time, a fresh data folder goes through
the commands a new shop runs, each in its own process:

    simulate → ingest → features build → features materialize → train (every model) → score

Each command's wall time and its process tree's peak resident memory are recorded (the
peak comes from `wait4`: the largest of the command and the processes it waited for). Per
stage, the exponent b of cost = a · customers^b is fitted by least squares on the logs over
the sizes that ran (target: at most 1, no worse than linear). A command that fails or
passes its time limit ends the run there: the table says which stage at which size ran
out, and the larger sizes are not tried.

Run: `python -m benchmarks growth --customers 1000000` (outputs under `<out>/growth/`,
figures in `growth.json`). At 1,000,000 customers training every model takes most of an
hour on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SIZES = (100_000, 300_000, 1_000_000, 3_000_000)
STAGES = ("simulate", "ingest", "features", "materialize", "train", "score")
EXPONENT_TARGET = 1.0
# A stage's time limit: past it the stage counts as having run out.
STAGE_LIMIT_S = 4 * 3600.0
LAUNCHER = Path(__file__).with_name("launch.py")


def _command(stage: str, customers: int, sim: Path) -> list[str]:
    args = {
        "simulate": ["simulate", "--customers", str(customers), "--seed", "7", "--out", str(sim)],
        "ingest": ["ingest", "--source", "folder", "--path", str(sim)],
        "features": ["features", "build", "--no-materialize"],
        "materialize": ["features", "materialize"],
        "train": ["train"],
        "score": ["score"],
    }[stage]
    return [sys.executable, "-m", "aftersale.cli", *args]


@dataclass
class StageRun:
    """One stage at one size: its seconds and peak memory, or why it did not finish."""

    stage: str
    customers: int
    seconds: float
    peak_gib: float
    failed: str | None = None


def run_stage(command: list[str], env: dict[str, str], limit_s: float, log: Path) -> StageRun:
    """Run `command` in a child process within `limit_s` seconds, its output to `log`.

    The command starts from `benchmarks/launch.py`, a small process, so that its peak memory
    is its own and not this process's (see there).

    Returns:
        The run with its wall seconds and peak resident memory (the largest of the command
        and the processes it waited for), and, where it did not finish, why (the exit
        status, or the time limit).
    """
    result = log.with_name(f"{log.name}.result.json")
    launcher = [sys.executable, str(LAUNCHER), str(limit_s), str(result), str(log), "--"]
    subprocess.run(launcher + command, env=env, check=True)
    figures = json.loads(result.read_text())
    result.unlink()
    failed = None
    code = figures["returncode"]
    if figures["timed_out"]:
        failed = f"passed its {limit_s:.0f} s limit"
    elif code != 0:
        failed = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    return StageRun("", 0, figures["seconds"], figures["peak_kib"] / 2**20, failed)


def exponent(customers: list[int], costs: list[float]) -> float:
    """b of cost = a · customers^b, fitted by least squares on the logs (NaN with fewer
    than two sizes)."""
    if len(customers) < 2:
        return math.nan
    slope, _ = np.polyfit(np.log(customers), np.log(costs), 1)
    return float(slope)


def grow(
    sizes: list[int],
    out: Path,
    stages: tuple[str, ...] = STAGES,
    limit_s: float = STAGE_LIMIT_S,
) -> list[StageRun]:
    """Every stage at every size, smallest first; stops at the first stage that fails.

    Each size works in `out/<size>/` (its simulation, its data folder and its log), which is
    emptied first and removed afterwards, except the log.
    """
    runs: list[StageRun] = []
    for customers in sorted(sizes):
        folder = out / str(customers)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        env = {**os.environ, "AFTERSALE_DATA_DIR": str(folder / "data")}
        env.pop("AFTERSALE_DASK_ADDRESS", None)
        log = folder / "commands.log"
        for stage in stages:
            run = run_stage(_command(stage, customers, folder / "sim"), env, limit_s, log)
            run.stage, run.customers = stage, customers
            runs.append(run)
            _print_run(run)
            if run.failed:
                print(f"  ran out: {stage} at {customers:,} customers ({run.failed}); see {log}")
                return runs
        for part in ("sim", "data"):
            shutil.rmtree(folder / part, ignore_errors=True)
    return runs


def _print_run(run: StageRun) -> None:
    status = f"  FAILED: {run.failed}" if run.failed else ""
    print(
        f"  {run.customers:>10,} {run.stage:<12} {run.seconds:9.1f} s {run.peak_gib:7.2f} GiB"
        + status,
        flush=True,
    )


def table(runs: list[StageRun]) -> list[dict]:
    """Per stage: seconds and peak GiB by size, and the fitted exponents of both."""
    rows = []
    stages = [s for s in STAGES if any(r.stage == s for r in runs)]
    for stage in [*stages, "all"]:
        done = [r for r in runs if r.failed is None and (stage == "all" or r.stage == stage)]
        by_size: dict[int, tuple[float, float]] = {}
        for run in done:
            seconds, peak = by_size.get(run.customers, (0.0, 0.0))
            by_size[run.customers] = (seconds + run.seconds, max(peak, run.peak_gib))
        if stage == "all":  # only sizes where every stage finished
            complete = {c for c in by_size if sum(r.customers == c for r in done) == len(stages)}
            by_size = {c: v for c, v in by_size.items() if c in complete}
        sizes = sorted(by_size)
        rows.append(
            {
                "stage": stage,
                "customers": sizes,
                "seconds": [by_size[c][0] for c in sizes],
                "peak_gib": [by_size[c][1] for c in sizes],
                "time_exponent": exponent(sizes, [by_size[c][0] for c in sizes]),
                "memory_exponent": exponent(sizes, [by_size[c][1] for c in sizes]),
            }
        )
    return rows


def bench_growth(customers: int, out: Path) -> None:
    sizes = [s for s in SIZES if s <= customers]
    if customers not in sizes:
        sizes.append(customers)
    folder = out / "growth"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\n## growth: {', '.join(f'{s:,}' for s in sizes)} customers, one size at a time")
    runs = grow(sizes, folder)
    rows = table(runs)
    print(
        f"\n  {'stage':<12} " + " ".join(f"{s:>21,}" for s in sorted({r.customers for r in runs}))
    )
    for row in rows:
        cells = " ".join(
            f"{s:>9.1f} s {g:5.2f} GiB"
            for s, g in zip(row["seconds"], row["peak_gib"], strict=True)
        )
        b = row["time_exponent"]
        mark = "" if math.isnan(b) else (" PASS" if b <= EXPONENT_TARGET else " MISS")
        print(
            f"  {row['stage']:<12} {cells}   time ~ customers^{b:.2f}{mark}, memory ~ "
            f"customers^{row['memory_exponent']:.2f}"
        )
    print(f"  target: time exponent <= {EXPONENT_TARGET:.1f} for every stage (at most linear)")
    (folder / "growth.json").write_text(
        json.dumps({"runs": [asdict(r) for r in runs], "table": rows}, indent=2)
    )
