"""The simulated business day by day: the history up to a day, and one day's batch.

The simulator still simulates its whole period from the seed; a history or a day batch is
cut from that complete history as it was known at the end of the day
(`features.contract.batches`). Ids, outcomes and every draw are those of the whole run, so a
history written up to day D and then day by day holds exactly the rows of the history
written at once, and a history up to the last day equals the plain simulation. The price is
a whole simulation per call; `simulate_cuts` writes a history and its following days from
one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from features.contract.batches import BatchKind, Manifest, as_known_at, day_batch
from features.contract.io import read_validated
from features.contract.schema import CONTRACT
from features.sources.simulator.engine import SimulationResult, run_simulation
from features.sources.simulator.output import Format, TableWriters, atomic_directory
from features.sources.simulator.params import DEFAULT_PARAMS, SimulatorParams
from features.sources.simulator.timeline import add_months


def last_day(start: date, months: int) -> date:
    """The last simulated day of a period of `months` months from `start`."""
    return add_months(start, months) - timedelta(days=1)


def simulate_until(
    out_dir: Path,
    day: date,
    customers: int,
    seed: int = 7,
    fmt: Format = "parquet",
    start: date = date(2024, 1, 1),
    months: int = 24,
    workers: int = 1,
    params: SimulatorParams = DEFAULT_PARAMS,
) -> SimulationResult:
    """Write the contract tables as known at the end of `day` (no `_truth/`).

    Arguments as `features.sources.simulator.simulate`, plus the day (UTC).

    Raises:
        ValueError: The day lies outside the simulated period, or as `simulate`.
    """
    cut = (Path(out_dir), "history", day)
    return simulate_cuts([cut], customers, seed, fmt, start, months, workers, params)[0]


def simulate_day(
    out_dir: Path,
    day: date,
    customers: int,
    seed: int = 7,
    fmt: Format = "parquet",
    start: date = date(2024, 1, 1),
    months: int = 24,
    workers: int = 1,
    params: SimulatorParams = DEFAULT_PARAMS,
) -> SimulationResult:
    """Write `day`'s batch: the rows that came into being on it and the earlier rows
    updated on it, each as known at its end (no `_truth/`).

    Raises:
        ValueError: The day lies outside the simulated period, or as `simulate`.
    """
    cut = (Path(out_dir), "day", day)
    return simulate_cuts([cut], customers, seed, fmt, start, months, workers, params)[0]


def simulate_cuts(
    cuts: Sequence[tuple[Path, BatchKind, date]],
    customers: int,
    seed: int = 7,
    fmt: Format = "parquet",
    start: date = date(2024, 1, 1),
    months: int = 24,
    workers: int = 1,
    params: SimulatorParams = DEFAULT_PARAMS,
) -> list[SimulationResult]:
    """Write several cuts of one simulation: each `(folder, kind, day)` is a history up to
    the day (`kind` "history", as `simulate_until`) or the day's batch ("day", as
    `simulate_day`), with the rows those calls would write, for one simulation's time.

    Raises:
        ValueError: A day lies outside the simulated period, or as `simulate`.
    """
    end = last_day(start, months)
    for _, _, day in cuts:
        if not start <= day <= end:
            raise ValueError(f"day {day} lies outside the simulated period {start} … {end}")
    if not cuts:
        return []
    started = time.perf_counter()
    first = Path(cuts[0][0])
    first.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=first.parent, prefix=f".{first.name}.whole-") as tmp:
        whole = Path(tmp) / "raw"
        run_simulation(whole, customers, seed, "parquet", start, months, workers, params)
        tables = read_validated(whole)
    simulated = time.perf_counter() - started
    schemas = {name: schema.source_schema for name, schema in CONTRACT.items()}
    results = []
    for out_dir, kind, day in cuts:
        began = time.perf_counter()
        cut = as_known_at(tables, day) if kind == "history" else day_batch(tables, day)
        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(out_dir) as folder:
            writers = TableWriters(folder, fmt, schemas)
            try:
                writers.open_all()
                for name, table in cut.items():
                    writers.write(name, table.select(schemas[name].names).cast(schemas[name]))
            finally:
                writers.close()
            Manifest(kind, day).write(folder)
        # The one simulation's time is counted in the first cut's.
        seconds = time.perf_counter() - began + (simulated if not results else 0.0)
        results.append(SimulationResult(out_dir=out_dir, rows=dict(writers.rows), seconds=seconds))
    return results
