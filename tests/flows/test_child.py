"""A function run in a child process of its own: its answer, its exception, its log records
and its death reach the caller."""

from __future__ import annotations

import logging
import os

import pytest

from flows.child import ProcessEndedError, in_child_process


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
