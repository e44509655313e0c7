"""Libraries a command will need, imported on a background thread while it does other work.

Feast, MLflow and Evidently each take seconds to import. A command that first waits on
something else (Prefect's temporary API starting in its own process, the raw tables decoded
by Arrow outside the interpreter lock) can have them loaded meanwhile. A module is imported
at most once per process whoever asks, so the stage that needs one later finds it loaded,
or waits on Python's import lock for the end of its import.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)

# The libraries the monitor's stages import (`flows.monitor`).
MONITOR_LIBRARIES = (
    "mlflow",
    "lightgbm",
    "sklearn.metrics",
    "features.store.config",
    "models.served.registry",
    "training.data",
    "training.model_cards",
    "training.policy",
    "evidently.legacy.report",
    "evidently.legacy.metrics",
    "evidently.legacy.calculations.stattests.registry",
)

_started: dict[tuple[str, ...], threading.Thread] = {}
_lock = threading.Lock()


def preload(modules: tuple[str, ...] = MONITOR_LIBRARIES) -> threading.Thread:
    """Import `modules` on a background thread and return it (started; the same thread
    for the same modules asked again in this process).

    A module that fails to import here is left to the code that needs it, which then
    raises as it would have.
    """

    def load() -> None:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:
                log.debug("preloading %s failed", module, exc_info=True)

    with _lock:
        thread = _started.get(modules)
        if thread is None:
            thread = threading.Thread(target=load, name="preload", daemon=True)
            thread.start()
            _started[modules] = thread
        return thread
