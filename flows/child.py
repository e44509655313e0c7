"""Run a function in a fresh child process of its own and give back its answer.

A process's heap does not shrink back when a large job ends: what pandas, Arrow and LightGBM
took in many small pieces mostly stays with the process, so the next job's peak adds to it.
A child process gives all of it back when it exits.

The child is started by spawn (fork would copy the locks of this process's threads:
Prefect's, Arrow's pools) with this process's environment, so it reads the same settings.
Its log records come back to this process's loggers through a queue, so they are filed and
shown where this process's own are. The standard library's `ProcessPoolExecutor` carries
the call, the answer and an exception; what it lacks (the records, and a clear error when the
child dies without an answer, and the child's end with this process's) is added here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import logging.handlers
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from aftersale.memory import peak_resident_bytes

T = TypeVar("T")

log = logging.getLogger(__name__)


class ProcessEndedError(RuntimeError):
    """The child process ended without an answer (killed, say, for memory)."""


class _ToOwnLogger(logging.Handler):
    """Hands each record from the child to this process's logger of the same name, which
    files and shows it as it would its own."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _levels() -> dict[str, int]:
    """The levels set on this process's loggers, the root's as ""."""
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
    }
    return {**levels, "": logging.root.level}


_records = None


def _keep_queue(queue, parent: int) -> None:
    """In the child, as it starts: keep the queue its records go to, and end with the
    process that started it."""
    global _records
    _records = queue
    _end_with(parent)


# Linux's prctl option: the signal a process receives when the thread that started it ends.
PR_SET_PDEATHSIG = 1


def _end_with(parent: int) -> None:
    """Have the kernel kill this process when `parent` ends (Linux; elsewhere nothing).

    Without it a child outlives a flow that is killed (a timeout, an operator's SIGKILL):
    its training would go on for minutes and then register a model that no run asked for.
    The standard library has no wrapper for prctl, hence ctypes.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The parent may have ended before the call: then nobody will send the signal.
    if os.getppid() != parent:
        os._exit(1)


def _call_sending_records(levels: dict[str, int], function: Callable[..., T], *args: object) -> T:
    """In the child: put every record its loggers let through (at the caller's levels) on
    the queue, warnings among them, and call `function`. The handlers are set here rather
    than as the child starts, because importing `function`'s module (Prefect's, say) may
    configure logging afresh."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(_records))
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    logging.captureWarnings(True)
    answer = function(*args)
    log.info(
        "%s.%s%s: peak resident memory %.2f GiB in its own process",
        function.__module__,
        function.__qualname__,
        args,
        peak_resident_bytes() / 2**30,
    )
    return answer


def in_child_process(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` in a fresh child process; its exception, if it raises, is raised
    here. `function` must be importable by name (a module's top-level function).

    Raises:
        ProcessEndedError: The child ended without returning or raising.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    listener = logging.handlers.QueueListener(queue, _ToOwnLogger())
    listener.start()
    try:
        with ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_keep_queue,
            initargs=(queue, os.getpid()),
        ) as pool:
            try:
                return pool.submit(_call_sending_records, _levels(), function, *args).result()
            except BrokenProcessPool as exc:
                raise ProcessEndedError(
                    f"the process running {function.__module__}.{function.__qualname__} ended "
                    "without an answer (killed, perhaps for memory)"
                ) from exc
    finally:
        listener.stop()
        queue.close()
