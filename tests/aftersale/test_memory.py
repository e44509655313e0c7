"""Freed arrays leave the process's resident memory once `return_freed_memory` has run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# In a fresh interpreter: free one mapped block (which raises glibc's dynamic mmap
# threshold), then fill 40 arrays of 8 MiB with a live block of 256 KiB after each, free the
# arrays and report the resident memory before and after, in MiB.
SCRIPT = """
import json, sys
import numpy as np
from aftersale.memory import return_freed_memory

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

fixed = return_freed_memory() if sys.argv[1] == "fixed" else False
big = np.ones(16 * 2**20 // 8)
del big
before = rss()
arrays, pins = [], []
for _ in range(40):
    arrays.append(np.ones(8 * 2**20 // 8))
    pins.append(np.ones(2**15))
during = rss()
del arrays
after = rss()
print(json.dumps({"fixed": fixed, "before": before, "during": during, "after": after}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_arrays_are_returned_once_thresholds_are_fixed() -> None:
    fixed = _run("fixed")
    if not fixed["fixed"]:
        pytest.skip("the C library is not glibc: the thresholds cannot be fixed")
    # 320 MiB were filled and freed.
    assert fixed["during"] - fixed["before"] > 300
    assert fixed["after"] - fixed["before"] < 40
    # Without fixed thresholds glibc keeps them: the case the call exists for.
    dynamic = _run("dynamic")
    assert dynamic["after"] - dynamic["before"] > 250


def test_the_call_is_idempotent() -> None:
    from aftersale.memory import return_freed_memory

    first = return_freed_memory()
    assert return_freed_memory() == first


ARROW_POOL = """
import json
import pyarrow as pa
import pyarrow.compute as pc
from aftersale.memory import arrow_allocations_from_jemalloc

before = pa.array(range(1_000_000))
default = pa.default_memory_pool().backend_name
backend = arrow_allocations_from_jemalloc()
after = pc.add(before, 1)
print(json.dumps({
    "default": default,
    "backend": backend,
    "now": pa.default_memory_pool().backend_name,
    "jemalloc_in_use": pa.jemalloc_memory_pool().bytes_allocated() > 0
    if backend == "jemalloc" else None,
    "sums": [pc.sum(before).as_py(), pc.sum(after).as_py()],
}))
"""


def test_arrow_then_allocates_from_jemalloc_and_earlier_arrays_stay_whole() -> None:
    out = subprocess.run(
        [sys.executable, "-c", ARROW_POOL], capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["sums"] == [499_999_500_000, 500_000_500_000]
    assert got["now"] == got["backend"]
    if got["backend"] != "jemalloc":
        pytest.skip(f"this pyarrow has no jemalloc: Arrow keeps {got['default']}")
    assert got["jemalloc_in_use"] is True
