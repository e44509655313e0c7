"""A function run in a child process of its own: its answer, its exception, its log records
and its death reach the caller."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.child import ProcessEndedError, in_child_process

ROOT = Path(__file__).resolve().parents[2]


def test_the_answer_comes_from_another_process() -> None:
    assert in_child_process(os.getpid) != os.getpid()


def test_the_childs_exception_is_raised_with_its_type_and_message() -> None:
    with pytest.raises(ValueError, match="invalid literal for int"):
        in_child_process(int, "seven")


def test_a_child_that_dies_without_an_answer_is_said_to_have_ended() -> None:
    with pytest.raises(ProcessEndedError, match=r"posix\._exit ended without an answer"):
        in_child_process(os._exit, 3)


def test_the_childs_log_records_reach_this_process_loggers_at_their_levels(caplog) -> None:
    caplog.set_level(logging.INFO, logger="flows")
    logger = logging.getLogger("flows.child.test")
    in_child_process(logger.info, "from the child: %s", "kept")
    in_child_process(logger.debug, "below the level: %s", "dropped")
    records = [r for r in caplog.records if r.name == "flows.child.test"]
    assert [r.getMessage() for r in records] == ["from the child: kept"]
    assert records[0].process != os.getpid()


def test_the_child_reports_its_own_peak_memory(caplog) -> None:
    caplog.set_level(logging.INFO, logger="flows")
    ballast = b"x" * (700 * 2**20)  # this process's peak is above the child's
    in_child_process(exec, "kept = b'x' * (300 * 2**20)")
    del ballast
    (line,) = [r.getMessage() for r in caplog.records if "peak resident memory" in r.getMessage()]
    peak = float(line.split("memory ")[1].split(" GiB")[0])
    # The 300 MiB the child held, not this process's 700 MiB more.
    assert 0.29 < peak < 0.6, line


PARENT = """
import sys
from flows.child import in_child_process

if __name__ == "__main__":
    code = "import os, time; open(%r, 'w').write(str(os.getpid())); time.sleep(120)"
    in_child_process(exec, code)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_child_ends_with_the_process_that_started_it(tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    script = tmp_path / "parent.py"
    script.write_text(PARENT % str(pid_file))
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the child never started"
            assert parent.poll() is None, "the parent ended first"
            time.sleep(0.1)
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, f"child {child} outlived its parent"
            time.sleep(0.1)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its exit to be read counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
