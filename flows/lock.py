"""One job at a time on a data folder.

A night (`pipeline`, `nightly`) or a retrain holds an exclusive `fcntl.flock` on
`<data_dir>/.night.lock` while it runs, so two of them never write the same versions at once:
the second waits for the first. The kernel releases the lock when a killed job's process
ends. The lock is re-entrant within a process, so `nightly` holds it across its nights while
each `pipeline` it runs takes it again.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".night.lock"

_held: dict[Path, int] = {}
_guard = threading.Lock()


@contextmanager
def data_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data folder's lock for the block (waiting while another process holds it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key = data_dir.resolve()
    with _guard:
        depth = _held.get(key, 0)
        if depth:
            _held[key] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    with open(key / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                del _held[key]
            fcntl.flock(handle, fcntl.LOCK_UN)
