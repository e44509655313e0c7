"""The growth benchmark times real commands, reads each one's own peak memory, fits the
exponent of cost against customers, and stops at the first stage that runs out."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import pytest

from benchmarks import growth


def test_the_exponent_of_cost_against_customers() -> None:
    sizes = [100_000, 300_000, 1_000_000]
    assert growth.exponent(sizes, [10.0, 30.0, 100.0]) == pytest.approx(1.0)
    assert growth.exponent(sizes, [1.0, 9.0, 100.0]) == pytest.approx(2.0)
    assert growth.exponent(sizes, [5.0, 5.0, 5.0]) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(growth.exponent(sizes[:1], [3.0]))


def test_a_stage_reports_its_own_peak_memory_its_failure_and_its_time_limit(tmp_path) -> None:
    log = tmp_path / "log"
    big = "b = bytearray(400 * 2**20); b[:: 4096] = b'x' * len(b[:: 4096])"
    run = growth.run_stage([sys.executable, "-c", big], {}, 60, log)
    assert run.failed is None
    assert run.peak_gib > 0.38
    # Neither the larger child before it nor this process, however large, counts.
    ballast = bytearray(500 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = growth.run_stage([sys.executable, "-c", "pass"], {}, 60, log)
    assert small.peak_gib < 0.2
    del ballast
    failed = growth.run_stage([sys.executable, "-c", "import sys; sys.exit(3)"], {}, 60, log)
    assert failed.failed == "exit status 3"
    # Past its limit the command is killed with the process it started.
    marker = tmp_path / "grandchild.pid"
    starts = (
        "import subprocess, sys, time; "
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(marker)!r}, 'w').write(str(g.pid)); time.sleep(60)"
    )
    slow = growth.run_stage([sys.executable, "-c", starts], {}, 3, log)
    assert slow.failed == "passed its 3 s limit"
    assert slow.seconds < 15
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed process not yet reaped by its parent is a zombie: dead all the same.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_two_sizes_grow_through_real_commands_and_a_failure_ends_the_run(
    tmp_path, monkeypatch, capsys
) -> None:
    stages = ("simulate", "ingest")
    runs = growth.grow([400, 200], tmp_path, stages=stages, limit_s=600)
    assert [(r.customers, r.stage) for r in runs] == [
        (200, "simulate"),
        (200, "ingest"),
        (400, "simulate"),
        (400, "ingest"),
    ]
    assert all(r.failed is None and r.seconds > 0 and r.peak_gib > 0.03 for r in runs)
    assert "published" in (tmp_path / "400" / "commands.log").read_text().lower()
    assert not (tmp_path / "400" / "data").exists()  # each size's folders are let go
    rows = {row["stage"]: row for row in growth.table(runs)}
    assert set(rows) == {"simulate", "ingest", "all"}
    assert rows["all"]["customers"] == [200, 400]
    assert rows["all"]["seconds"][0] == pytest.approx(runs[0].seconds + runs[1].seconds)
    assert all(math.isfinite(row["time_exponent"]) for row in rows.values())

    # The second stage fails at the first size: the larger size is never tried.
    real = growth._command
    monkeypatch.setattr(
        growth,
        "_command",
        lambda stage, n, sim: (
            real(stage, n, sim)
            if stage == "simulate"
            else [sys.executable, "-c", "import sys; sys.exit(2)"]
        ),
    )
    failed = growth.grow([200, 400], tmp_path / "again", stages=stages, limit_s=600)
    assert [(r.customers, r.stage, r.failed) for r in failed] == [
        (200, "simulate", None),
        (200, "ingest", "exit status 2"),
    ]
    assert "ran out: ingest at 200 customers (exit status 2)" in capsys.readouterr().out
    rows = {row["stage"]: row for row in growth.table(failed)}
    assert rows["all"]["customers"] == []
