"""The monitor's libraries, imported on a background thread while the raw tables are read."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from flows.monitor import STAGE_LIBRARIES


def test_every_stage_library_can_be_found() -> None:
    """A renamed or removed module would only slow the first stage silently: none is."""
    missing = [name for name in STAGE_LIBRARIES if importlib.util.find_spec(name) is None]
    assert missing == []


def test_preload_imports_in_the_background_and_skips_what_fails() -> None:
    """In a fresh interpreter: the modules are imported once the thread ends, a module that
    does not exist is skipped, and those after it are still loaded."""
    code = """
import sys
from flows.monitor import preload
wanted = ("evidently.legacy.report", "no_such_module_here", "training.policy")
before = [m in sys.modules for m in wanted]
thread = preload(wanted)
thread.join(120)
print(before, thread.daemon, thread.is_alive(), [m in sys.modules for m in wanted])
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True
    )
    assert done.stdout.split("\n")[-2] == "[False, False, False] True False [True, False, True]"
