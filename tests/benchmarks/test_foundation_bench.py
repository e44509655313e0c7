"""The foundation benchmarks measure each command's own time, memory and output."""

from __future__ import annotations

import sys

import pytest

from benchmarks.foundation import _run_measured


def test_a_measured_command_reports_its_own_peak_memory_and_prints_its_output(capsys) -> None:
    # This process holds 500 MiB more than the command will: a child started straight from
    # it reports at least this process's peak.
    ballast = bytearray(500 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    seconds, peak_gib = _run_measured([sys.executable, "-c", "print('the command ran')"])
    del ballast
    assert peak_gib < 0.25
    assert 0 < seconds < 60
    assert "the command ran" in capsys.readouterr().out


def test_a_failed_command_is_reported_with_its_exit_status() -> None:
    with pytest.raises(RuntimeError, match="exit status 3"):
        _run_measured([sys.executable, "-c", "raise SystemExit(3)"])
