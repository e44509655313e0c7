"""The monitor's libraries, imported on a background thread while the raw tables are read."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

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

import pytest
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


def _tables_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(a[name].equals(b[name]) for name in a)


def test_the_read_stage_takes_what_was_read_ahead_once(trained_registry, monkeypatch) -> None:
    """The tables read while the flow starts are those the read stage would read itself;
    the read stage takes them once, and reads afresh when asked for other tables or another
    number of customers than were read ahead."""
    from flows import monitor as flow

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(trained_registry.data_dir))
    monkeypatch.setenv("AFTERSALE_MONITOR_CUSTOMERS", "120")
    names = flow.monitored_tables(["delay_risk"])
    flow.read_ahead(["delay_risk"])
    ahead = flow._ahead["read"][1].result(timeout=120)
    taken = flow._data(names)
    assert taken is ahead
    fresh = flow._data(names)
    assert fresh is not ahead
    assert _tables_equal(fresh.tables, ahead.tables)
    assert (fresh.customers, fresh.business_customers) == (
        ahead.customers,
        ahead.business_customers,
    )
    # Other tables (every model's), or another bound: read again, as asked.
    flow.read_ahead(None)
    other = flow._ahead["read"][1].result(timeout=120)
    assert flow._data(names) is not other
    assert flow._ahead == {}
    flow.read_ahead(["delay_risk"])
    ahead = flow._ahead["read"][1].result(timeout=120)
    monkeypatch.setenv("AFTERSALE_MONITOR_CUSTOMERS", "60")
    smaller = flow._data(names)
    assert smaller is not ahead
    assert smaller.customers < ahead.customers


def test_a_failed_read_ahead_fails_the_read_stage(trained_registry, monkeypatch) -> None:
    """What went wrong while reading ahead is raised where the flow reads."""
    import training.monitor
    from flows import monitor as flow

    def unreadable(*_args):
        raise OSError("raw table unreadable")

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(trained_registry.data_dir))
    monkeypatch.setattr(training.monitor, "monitored_data", unreadable)
    flow.read_ahead(["churn"])
    with pytest.raises(OSError, match="raw table unreadable"):
        flow._data(flow.monitored_tables(["churn"]))


def test_nothing_is_read_ahead_without_raw_data_or_for_an_unknown_model(tmp_path, monkeypatch):
    """Without published raw data, or for a model the flow refuses, nothing is started: the
    flow then says what is wrong itself."""
    from flows import monitor as flow

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path))
    flow.read_ahead(None)
    assert flow._ahead == {}
    flow.read_ahead(["no_such_model"])
    assert flow._ahead == {}


def test_the_stages_start_once_the_libraries_are_loaded(trained_registry, monkeypatch) -> None:
    """Libraries still loading when the raw tables are in (read ahead, say) are waited for
    before the first stage imports them: a module imported by two threads at once can be
    seen half-initialised."""
    import threading
    import time

    from flows import monitor as flow

    loaded = threading.Event()

    def slow_preload(modules=flow.STAGE_LIBRARIES) -> threading.Thread:
        def load() -> None:
            time.sleep(1.0)
            loaded.set()

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        return thread

    seen = []
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(trained_registry.data_dir))
    monkeypatch.setattr(flow, "preload", slow_preload)
    monkeypatch.setattr(flow, "_each_stage", lambda *args: seen.append(loaded.is_set()) or [])
    assert flow.monitor.fn(models=["delay_risk"]) == []
    assert seen == [True]
