"""The console: stage lines on a terminal and in a pipe, and where log records and warnings go."""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import pytest
from rich.console import Console

from aftersale.console import (
    INFO_LIBRARIES,
    LIBRARY_ENVIRONMENT,
    OWN_PACKAGES,
    PROJECT_ROOT,
    StageDisplay,
    is_own,
    report_stage,
    route_logs,
)


def plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=120), buffer


def test_each_finished_stage_prints_one_plain_line_off_a_terminal() -> None:
    console, buffer = plain_console()
    with StageDisplay(console, Path("data/logs/aftersale.log")):
        with report_stage("ingest") as stage:
            stage.rows = 123_456
        with report_stage("train churn") as stage:
            stage.rows, stage.unit = 5_000, "test rows"
        with report_stage("materialise"):
            pass
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "log file: data/logs/aftersale.log"
    assert [line.split()[:2] for line in lines[1:]] == [
        ["✓", "ingest"],
        ["✓", "train"],
        ["✓", "materialise"],
    ]
    assert "123,456 rows" in lines[1]
    assert "5,000 test rows" in lines[2]
    assert all(line.endswith(" s") for line in lines[1:])


def test_a_failed_stage_is_marked_and_its_error_raised() -> None:
    console, buffer = plain_console()
    display = StageDisplay(console, Path("run.log"))
    with pytest.raises(RuntimeError, match="boom"), display, report_stage("score"):
        raise RuntimeError("boom")
    output = buffer.getvalue()
    assert "✗ score" in output
    assert "score failed: see also run.log" in output


def test_the_opening_line_ends_when_the_first_stage_starts() -> None:
    console, buffer = plain_console()
    with StageDisplay(console, opening="start"), report_stage("ingest"):
        pass
    assert [line.split()[:2] for line in buffer.getvalue().splitlines()] == [
        ["✓", "start"],
        ["✓", "ingest"],
    ]


def test_a_job_stopped_before_its_first_stage_drops_the_opening_line() -> None:
    console, buffer = plain_console()
    with pytest.raises(ValueError, match="unknown model"), StageDisplay(console, opening="start"):
        raise ValueError("unknown model")
    assert buffer.getvalue() == ""


def test_a_terminal_shows_the_stages_live() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=True, color_system=None)
    with StageDisplay(console), report_stage("build features") as stage:
        stage.rows = 42
    assert "✓ build features" in buffer.getvalue()
    assert "42 rows" in buffer.getvalue()


def test_stages_without_a_display_are_only_records() -> None:
    with report_stage("ingest") as stage:
        stage.rows = 3
    assert (stage.name, stage.count) == ("ingest", "3 rows")


def warning_record(path: Path) -> logging.LogRecord:
    """The record `logging.captureWarnings` makes of a warning raised at `path`."""
    text = warnings.formatwarning("message", UserWarning, str(path), 12)
    return logging.LogRecord("py.warnings", logging.WARNING, __file__, 1, "%s", (text,), None)


@pytest.mark.parametrize(
    ("record", "own"),
    [
        (logging.LogRecord("features.store.sync", logging.WARNING, "", 1, "x", (), None), True),
        (logging.LogRecord("flows", logging.WARNING, "", 1, "x", (), None), True),
        (logging.LogRecord("mlflow.pyfunc", logging.WARNING, "", 1, "x", (), None), False),
        (logging.LogRecord("featurestore", logging.WARNING, "", 1, "x", (), None), False),
        (warning_record(PROJECT_ROOT / "serving" / "batch.py"), True),
        (warning_record(PROJECT_ROOT / ".venv" / "lib" / "site-packages" / "ibis" / "a.py"), False),
        (warning_record(Path("/usr/lib/python3/site-packages/mlflow/pyfunc.py")), False),
    ],
)
def test_own_records_are_told_from_the_libraries(record: logging.LogRecord, own: bool) -> None:
    assert is_own(record) is own


@pytest.fixture
def routed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Logs routed to a file under tmp_path and a console buffer; undone afterwards."""
    for name, value in LIBRARY_ENVIRONMENT.items():
        monkeypatch.setenv(name, os.environ.get(name, value))
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    shown = io.StringIO()
    path = tmp_path / "logs" / "aftersale.log"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # An earlier command in this session may have captured warnings already.
        logging.captureWarnings(False)
        route_logs(path, verbose=False, console=Console(file=shown, width=200))
        yield path, shown
        logging.captureWarnings(False)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    for name in (*OWN_PACKAGES, *INFO_LIBRARIES):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_library_records_go_to_the_file_and_ours_to_the_console(routed) -> None:
    path, shown = routed
    assert not path.exists()
    logging.getLogger("somelibrary.client").warning("library chatter")
    logging.getLogger("features.store").info("materialised 3 views")
    logging.getLogger("features.store").warning("a view is empty")
    warnings.warn_explicit("library deprecation", UserWarning, "/site-packages/lib/a.py", 3)
    logged = path.read_text()
    assert "library chatter" in logged
    assert "materialised 3 views" in logged
    assert "a view is empty" in logged
    assert "library deprecation" in logged
    assert "a view is empty" in shown.getvalue()
    assert "library" not in shown.getvalue()
    assert "materialised" not in shown.getvalue()
