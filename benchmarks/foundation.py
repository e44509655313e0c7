"""Foundation benchmarks: simulating the business and validating it against the contract.

Targets (issue: foundation): `aftersale simulate --customers 1000000` within 90 s and 6 GiB
peak memory on 2 cores; `aftersale validate` on that output at 1,000,000 rows/s or more.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.growth import run_stage
from features.contract.schema import CONTRACT
from features.contract.validate import validate_folder

# A measured command past this many seconds is stopped (the largest sizes take an hour or so).
LIMIT_S = 4 * 3600


def _sim_dir(out: Path, customers: int) -> Path:
    return out / f"sim-{customers}"


def _run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run a command in a child process started from a small launcher
    (`benchmarks.growth.run_stage`), so that its peak memory is its own and not this
    process's or an earlier child's; print its output after it.

    Returns:
        Wall seconds and the command's peak resident memory in GiB.

    Raises:
        RuntimeError: The command failed or ran past `LIMIT_S`.
    """
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "command.log"
        run = run_stage(cmd, dict(os.environ), LIMIT_S, log)
        if log.exists():
            sys.stdout.write(log.read_text())
            sys.stdout.flush()
    if run.failed:
        raise RuntimeError(f"{' '.join(cmd)}: {run.failed}")
    return run.seconds, run.peak_gib


def _io_floor(folder: Path) -> tuple[float, int]:
    """Seconds to read and rewrite every table with plain pyarrow: the I/O floor."""
    started = time.perf_counter()
    rows = 0
    scratch = folder.parent / f"{folder.name}-copy"
    scratch.mkdir(exist_ok=True)
    for name in CONTRACT:
        path = folder / f"{name}.parquet"
        if path.exists():
            table = pq.read_table(path)
            rows += table.num_rows
            pq.write_table(table, scratch / path.name)
    seconds = time.perf_counter() - started
    for path in scratch.iterdir():
        path.unlink()
    scratch.rmdir()
    return seconds, rows


def bench_simulate(customers: int, out: Path) -> None:
    folder = _sim_dir(out, customers)
    print(f"\n## simulate --customers {customers:,}")
    cmd = [
        sys.executable,
        "-m",
        "aftersale.cli",
        "simulate",
        "--out",
        str(folder),
        "--customers",
        str(customers),
        "--seed",
        "7",
    ]
    wall, peak_gib = _run_measured(cmd)
    floor_s, rows = _io_floor(folder)
    print(
        f"  wall {wall:.1f} s (target ≤ 90 s at 1,000,000), peak RSS {peak_gib:.2f} GiB "
        f"(target ≤ 6 GiB)"
    )
    print(f"  {rows:,} rows, {rows / wall:,.0f} rows/s overall")
    for name in CONTRACT:
        path = folder / f"{name}.parquet"
        if path.exists():
            n = pq.ParquetFile(path).metadata.num_rows
            print(f"  {name:<16} {n:>12,} rows  {n / wall:>12,.0f} rows/s")
    print(
        f"  baseline: read + rewrite of the same tables with pyarrow {floor_s:.1f} s; "
        f"simulate / baseline = {wall / floor_s:.1f}×"
    )


def bench_validate(customers: int, out: Path) -> None:
    folder = _sim_dir(out, customers)
    print(f"\n## validate ({customers:,} customers)")
    if not (folder / "customers.parquet").exists():
        bench_simulate(customers, out)
    started = time.perf_counter()
    report = validate_folder(folder)
    seconds = time.perf_counter() - started
    read_started = time.perf_counter()
    for name in report.rows:
        pq.read_table(folder / f"{name}.parquet")
    read_s = time.perf_counter() - read_started
    rate = report.total_rows / seconds
    print(
        f"  {'valid' if report.ok else 'INVALID'}: {report.total_rows:,} rows in {seconds:.1f} s "
        f"= {rate:,.0f} rows/s (target ≥ 1,000,000 rows/s)"
    )
    print(
        f"  baseline: reading the same tables with pyarrow {read_s:.1f} s; "
        f"validate / read = {seconds / read_s:.1f}×"
    )
    for problem in report.violations[:10]:
        print(f"  violation: {problem}")
