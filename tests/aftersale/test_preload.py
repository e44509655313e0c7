"""Libraries imported on a background thread while a command does other work."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from aftersale.preload import MONITOR_LIBRARIES


def test_every_monitor_library_can_be_found() -> None:
    """A renamed or removed module would only slow the monitor's first stage silently:
    none is."""
    missing = [name for name in MONITOR_LIBRARIES if importlib.util.find_spec(name) is None]
    assert missing == []


def test_preload_imports_in_the_background_once_and_skips_what_fails() -> None:
    """In a fresh interpreter: the modules are imported once the thread ends, a module that
    does not exist is skipped, those after it are still loaded, and asking again for the
    same modules gives the same thread, not a second one."""
    code = """
import sys, threading
from aftersale.preload import preload
wanted = ("evidently.legacy.report", "no_such_module_here", "training.policy")
before = [m in sys.modules for m in wanted]
thread = preload(wanted)
again = preload(wanted)
thread.join(120)
threads = [t for t in threading.enumerate() if t.name == "preload"]
print(before, thread.daemon, again is thread, thread.is_alive(), threads,
      [m in sys.modules for m in wanted])
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True
    )
    assert done.stdout.split("\n")[-2] == (
        "[False, False, False] True True False [] [True, False, True]"
    )
