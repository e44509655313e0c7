"""Python's cycle collector while a command's libraries load.

Feast, MLflow, Evidently, scikit-learn and Prefect build about 700,000 objects as they are
imported, and those live as long as the process. The cycle collector walks every object it
tracks at each full collection, and a full collection comes each time the objects made
since the last one reach a quarter of those it holds. While the libraries load, it runs
again and again over their growing mass; at the process's end the interpreter walks them
all again, in several passes. On `aftersale monitor` at 1,000,000 customers that came to
25 full collections, most of them during the imports, and 3.5-5.5 s between the last
line printed and the process's exit.

`libraries_loading` pauses the collector while libraries load, then collects once and
freezes what survives (`gc.freeze`): later collections, and those at the end, pass over it.
Objects made afterwards are collected as usual. This is the standard library's own
mechanism; no library wraps it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def libraries_loading() -> Iterator[None]:
    """Pause the cycle collector for the block (it imports libraries), then collect once,
    set aside what survives from all later collections (`gc.freeze`), and resume the
    collector as it was.

    The pause is the whole process's, threads included: keep the block to imports.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        gc.freeze()
        if was_enabled:
            gc.enable()
