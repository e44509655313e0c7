"""While libraries load the cycle collector waits; what they leave is set aside from later
collections, garbage is not, and the collector is left as it was."""

from __future__ import annotations

import json
import subprocess
import sys

# In a fresh interpreter, so that freezing leaves the test process as it was.
SCRIPT = """
import gc, json, sys, weakref
from aftersale.collector import libraries_loading

class Node:
    pass

if sys.argv[1] == "disabled":
    gc.disable()
before = gc.get_freeze_count()
with libraries_loading():
    paused = not gc.isenabled()
    kept = Node()
    kept.self = kept
    lost = Node()
    lost.self = lost
    lost_ref = weakref.ref(lost)
    del lost
    collected_inside = lost_ref() is None
made_after = Node()
tracked = {id(o) for o in gc.get_objects()}
print(json.dumps({
    "paused": paused,
    "collected_inside": collected_inside,
    "garbage_collected": lost_ref() is None,
    "kept_set_aside": id(kept) not in tracked,
    "frozen_grew": gc.get_freeze_count() > before,
    "made_after_tracked": id(made_after) in tracked,
    "enabled_after": gc.isenabled(),
}))
"""


def run(state: str) -> dict[str, bool]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, state], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_libraries_loading_pauses_collects_once_and_sets_aside_what_survives() -> None:
    seen = run("enabled")
    assert seen == {
        "paused": True,
        "collected_inside": False,
        "garbage_collected": True,
        "kept_set_aside": True,
        "frozen_grew": True,
        "made_after_tracked": True,
        "enabled_after": True,
    }


def test_a_collector_switched_off_before_stays_off() -> None:
    seen = run("disabled")
    assert seen["kept_set_aside"]
    assert seen["garbage_collected"]
    assert seen["enabled_after"] is False
