"""Where freed memory goes: back to the operating system when it is freed (glibc's malloc,
for training's peaks), or kept a while for the next large array (Arrow's allocator, for
the monitor's reads).

glibc raises its mmap threshold each time a mapped block is freed, up to 32 MiB on 64-bit
systems. After that, column arrays of a few MiB come from the heap. Once freed they stay
in the process's resident memory, for as long as a live block sits above them in the heap.
Training frees and allocates many such arrays as it retrieves, joins and splits frames. At
1,000,000 customers, the uplift model's process held 2.3 GiB of freed heap after preparing
its rows: `malloc_trim` gave it back.

`return_freed_memory` fixes the threshold instead. Every block of at least
`MMAP_THRESHOLD` is then mapped on its own and unmapped when freed. A fixed threshold also
fixes the heap's trim threshold, so a freed top of the heap is returned too. Mapping a
block costs a system call and its first page faults: microseconds against the block's own
fill. This is one `mallopt` call, which no library wraps; where the C library is not
glibc, the call does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# glibc's `mallopt` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's own starting threshold, held fixed.
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 128 * 1024

_done = False


def return_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for the rest of the process (once); whether
    they are set (False off Linux or where the C library is not glibc)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt answers 1 on success and 0 on an error.
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return False
    if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return False
    log.debug("glibc mmap and trim thresholds fixed at %d bytes", MMAP_THRESHOLD)
    _done = True
    return True


def arrow_allocations_from_jemalloc() -> str:
    """Have Arrow allocate from jemalloc where this pyarrow is built with it; the backend
    Arrow allocates from afterwards ("mimalloc", pyarrow's default, where it is not).

    Arrays already made keep the pool they came from. Reading the 1,000,000-customer
    business's raw tables for the monitor (731 MB of Parquet, 44 million rows, cut to
    50,000 customers) took 9.2-10.0 s with 5.7-7.7 s of it in the kernel from mimalloc, and
    7.4-7.7 s with 2.8 s in the kernel from jemalloc, peaking at 3.2 GiB resident instead
    of 3.8 GiB: mimalloc hands freed pages back at once and faults them in again at the
    next large array, jemalloc keeps them for a few seconds for the next.
    """
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        log.debug("this pyarrow has no jemalloc; Arrow's default pool stays")
    return pa.default_memory_pool().backend_name


def peak_resident_bytes() -> int:
    """This process's peak resident memory: Linux's `VmHWM`, which starts afresh at `exec`
    (`ru_maxrss` carries the peak of the process that started this one across it, so a
    child spawned from a large process would report at least that one's), else
    `ru_maxrss`."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    # KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
